"""A-GEM: the projection in closed form, the step that uses it, the per-task memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import models, train
from cljax.methods import agem
from tests.conftest import tiny_scenario

SC = tiny_scenario()
MODEL = models.MLP((8,), SC.num_classes)


def test_projection_is_the_closed_form_and_only_when_the_gradients_conflict():
    g = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([[0.5]])}
    r = {"a": jnp.array([-1.0, 1.0]), "b": jnp.array([[2.0]])}
    flat_g, flat_r = np.array([1.0, -2.0, 0.5]), np.array([-1.0, 1.0, 2.0])
    dot = flat_g @ flat_r  # -2: conflict
    expected = flat_g - dot / (flat_r @ flat_r) * flat_r
    out = agem.project(g, r)
    got = np.concatenate([np.ravel(out["a"]), np.ravel(out["b"])])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert abs(got @ flat_r) < 1e-6  # the memory's loss no longer rises to first order
    agreeing = {"a": -r["a"], "b": r["b"]}  # positive dot product: untouched
    same = agem.project(agreeing, r)
    jax.tree.map(np.testing.assert_array_equal, same, agreeing)


def trained_task(method, state, t):
    info = train.task_info(SC, train.RunConfig(batch_size=4, epochs=1), t)
    x, y = (jnp.asarray(a) for a in SC.train(t))
    step = jax.jit(method.train_step)
    for i in range(2):
        state, _ = step(
            state, {"x": x[4 * i : 4 * i + 4], "y": y[4 * i : 4 * i + 4]}, jax.random.key(i)
        )
    end = jax.jit(method.end_task, static_argnums=1)
    return end(state, info, (x, y), jax.random.key(t)), info


def test_memory_gets_an_equal_random_share_of_each_task():
    method = agem.make(model=MODEL, input_fn=SC.input_fn, buffer_size=9, minibatch_size=4)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    state, info = trained_task(method, state, 0)
    per_task = 9 // SC.num_tasks
    assert int(state.buffer.num_seen) == per_task == 4
    stored = np.asarray(state.buffer.data["y"])[:per_task]
    assert set(stored.tolist()) <= set(SC.classes(0))
    x0 = np.asarray(SC.train(0)[0])
    for item in np.asarray(state.buffer.data["x"])[:per_task]:  # real items of the task
        assert (x0 == item).all(axis=(1, 2)).any()
    state, _ = trained_task(method, state, 1)
    assert int(state.buffer.num_seen) == 2 * per_task


def test_step_applies_the_projected_gradient_of_the_batch():
    method = agem.make(model=MODEL, input_fn=SC.input_fn, lr=0.5, buffer_size=8, minibatch_size=8)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    state, _ = trained_task(method, state, 0)
    x, y = (jnp.asarray(a) for a in SC.train(1))
    batch = {"x": x[:4], "y": y[:4]}
    new, _ = jax.jit(method.train_step)(state, batch, jax.random.key(5))
    # by hand: every stored item is the reference (minibatch = buffer size), in any order
    prepared = lambda a: SC.input_fn(a, None, False)  # noqa: E731

    def ce(params, xs, ys):
        logits = MODEL.apply({"params": params}, prepared(xs))
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(ys)), ys])

    params = state.net.params
    n = int(state.buffer.num_seen)

    @jax.jit
    def by_hand(params, bx, by, mx, my):
        return agem.project(jax.grad(ce)(params, bx, by), jax.grad(ce)(params, mx, my))

    step = by_hand(
        params, batch["x"], batch["y"], state.buffer.data["x"][:n], state.buffer.data["y"][:n]
    )
    expected = jax.tree.map(lambda p, d: p - 0.5 * d, params, step)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        new.net.params,
        expected,
    )


def test_buffer_smaller_than_the_tasks_is_a_clear_error():
    method = agem.make(model=MODEL, input_fn=SC.input_fn, buffer_size=1)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    with pytest.raises(ValueError, match="smaller than the 2 tasks"):
        trained_task(method, state, 0)


def test_agem_r_projects_as_agem_and_fills_a_reservoir_from_the_stream():
    """A-GEM-R: A-GEM's projected step against reservoir items; the batch enters the
    reservoir after the step (no task boundary involved)."""
    from cljax.methods import agem_r

    method = agem_r.make(model=MODEL, input_fn=SC.input_fn, lr=0.5, buffer_size=6, minibatch_size=6)
    assert not method.does("end_task") and not method.does("begin_task")
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    x, y = (jnp.asarray(a) for a in SC.train(0))
    step = jax.jit(method.train_step)
    state, _ = step(state, {"x": x[:4], "y": y[:4]}, jax.random.key(1))
    assert int(state.buffer.num_seen) == 4  # the first batch, stored in order
    np.testing.assert_array_equal(state.buffer.data["y"][:4], y[:4])
    x1, y1 = (jnp.asarray(a) for a in SC.train(1))
    batch = {"x": x1[:4], "y": y1[:4]}
    new, _ = step(state, batch, jax.random.key(2))
    prepared = lambda a: SC.input_fn(a, None, False)  # noqa: E731

    def ce(params, xs, ys):
        logits = MODEL.apply({"params": params}, prepared(xs))
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(ys)), ys])

    params = state.net.params
    g = agem.project(
        jax.grad(ce)(params, batch["x"], batch["y"]),
        jax.grad(ce)(params, state.buffer.data["x"][:4], state.buffer.data["y"][:4]),
    )
    expected = jax.tree.map(lambda p, d: p - 0.5 * d, params, g)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        new.net.params,
        expected,
    )
    assert int(new.buffer.num_seen) == 8  # reservoir: 6 slots over 8 items seen
