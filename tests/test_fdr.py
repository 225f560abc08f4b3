"""FDR: the memory's share per task, its stored logits, the function-distance step."""

import jax
import jax.numpy as jnp
import numpy as np

from cljax import models, train
from cljax.methods import fdr
from tests.conftest import tiny_scenario

SC = tiny_scenario(num_tasks=3)
MODEL = models.MLP((8,), SC.num_classes)
CONFIG = train.RunConfig(batch_size=4, epochs=1)


def test_memory_splits_evenly_over_tasks_and_stores_the_logits_of_the_tasks_end():
    method = fdr.make(model=MODEL, input_fn=SC.input_fn, buffer_size=12, minibatch_size=4)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    end = jax.jit(method.end_task, static_argnums=1)
    state = end(state, train.task_info(SC, CONFIG, 0), SC.train(0), jax.random.key(1))
    first = state
    mem = state.memory
    assert int(mem.valid.sum()) == 12 and set(np.asarray(mem.task).tolist()) == {0}
    logits = method.predict(state, mem.x)
    np.testing.assert_allclose(mem.logits, logits, rtol=1e-5, atol=1e-6)
    moved = state.replace(
        net=state.net.replace(params=jax.tree.map(lambda p: p + 0.1, state.net.params))
    )
    state = end(moved, train.task_info(SC, CONFIG, 1), SC.train(1), jax.random.key(2))
    mem = state.memory
    valid = np.asarray(mem.valid)
    tasks = np.asarray(mem.task)[valid]
    assert sorted(tasks.tolist()) == [0] * 6 + [1] * 6
    # task 0 kept its first 6 items, with the logits stored when it ended
    old = valid & (np.asarray(mem.task) == 0)
    assert sorted(np.asarray(mem.rank)[old].tolist()) == list(range(6))
    for slot in np.flatnonzero(old):
        was = np.flatnonzero(
            np.asarray(first.memory.valid) & (np.asarray(first.memory.rank) == mem.rank[slot])
        )
        np.testing.assert_array_equal(mem.logits[slot], first.memory.logits[was[0]])


def test_step_is_cross_entropy_then_the_function_distance():
    method = fdr.make(model=MODEL, input_fn=SC.input_fn, lr=0.5, buffer_size=6, minibatch_size=6)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    state = jax.jit(method.end_task, static_argnums=1)(
        state, train.task_info(SC, CONFIG, 0), SC.train(0), jax.random.key(1)
    )
    x, y = (jnp.asarray(a) for a in SC.train(1))
    batch = {"x": x[:4], "y": y[:4]}
    new, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(3))
    prep = lambda a: SC.input_fn(a, None, False)  # noqa: E731
    apply = lambda p, a: MODEL.apply({"params": p}, prep(a))  # noqa: E731
    mem = state.memory

    @jax.jit
    def by_hand(params):
        ce = lambda p: (
            -jnp.mean(jax.nn.log_softmax(apply(p, batch["x"]))[jnp.arange(4), batch["y"]])
        )  # noqa: E731
        params = jax.tree.map(lambda p, g: p - 0.5 * g, params, jax.grad(ce)(params))

        def dist(p):  # every stored item (minibatch = memory size), in any order
            probs = jax.nn.softmax(apply(p, mem.x))
            return jnp.mean(jnp.linalg.norm(probs - jax.nn.softmax(mem.logits), axis=-1))

        d, g = jax.value_and_grad(dist)(params)
        return jax.tree.map(lambda p, g: p - 0.5 * g, params, g), d

    expected, d = by_hand(state.net.params)
    np.testing.assert_allclose(float(metrics["distance"]), float(d), rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        new.net.params,
        expected,
    )
