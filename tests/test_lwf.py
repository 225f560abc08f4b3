"""LwF: the warm-up trains the output layer alone, the targets come from the frozen teacher."""

import jax
import jax.numpy as jnp
import numpy as np

from cljax import methods, models, train
from cljax.methods import lwf
from tests.conftest import tiny_scenario

SC = tiny_scenario()


def test_warm_up_trains_the_head_then_freezes_the_teacher_whose_logits_are_the_targets():
    method = methods.get("lwf").make(
        model=models.MLP((8,), SC.num_classes), input_fn=SC.input_fn, lr=0.1, alpha=2.0
    )
    config = train.RunConfig(batch_size=4, epochs=2)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    info0 = train.task_info(SC, config, 0)
    state = method.begin_task(state, info0, jax.random.key(1))
    x0, y0 = (jnp.asarray(a) for a in SC.train(0))
    step = jax.jit(method.train_step)
    for i in range(3):
        state, m = step(
            state, {"x": x0[4 * i : 4 * i + 4], "y": y0[4 * i : 4 * i + 4]}, jax.random.key(i)
        )
        assert float(m["kd"]) == 0.0  # nothing to distil in the first task
    info1 = train.task_info(SC, config, 1)
    assert (info1.batch_size, info1.epochs) == (4, 2)
    before = state.net.params
    state = method.begin_task(state, info1, jax.random.key(2))
    x1, y1 = (jnp.asarray(a) for a in SC.train(1))
    warm = jax.jit(method.begin_task_data, static_argnums=1)(
        state, info1, (x1, y1), jax.random.key(3)
    )
    head = lwf.head_name(before)
    assert head == "Dense_1"
    for name in before:
        same = all(
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree.leaves(before[name]), jax.tree.leaves(warm.net.params[name]), strict=True
            )
        )
        assert same == (name != head)  # only the output layer moved
    jax.tree.map(np.testing.assert_array_equal, warm.teacher, warm.net.params)
    np.testing.assert_array_equal(warm.past, np.isin(np.arange(SC.num_classes), SC.classes(0)))
    # a step: the distillation targets are the teacher's, not the moving network's
    batch = {"x": x1[:4], "y": y1[:4]}
    moved = warm.replace(
        net=warm.net.replace(params=jax.tree.map(lambda p: p * 1.1, warm.net.params))
    )
    _, m = step(moved, batch, jax.random.key(4))
    plain = SC.input_fn(batch["x"], None, False)
    apply = lambda p: moved.net.apply_fn({"params": p}, plain)  # noqa: E731
    past = np.asarray(warm.past)

    def s(logits):
        p = jax.nn.softmax(np.where(past, logits, -1e9))
        r = np.where(past, p, 0.0) ** 0.5
        return r / r.sum(-1, keepdims=True)

    old, new = s(apply(warm.teacher)), s(apply(moved.net.params))
    expected = -np.mean(np.sum(np.where(past, old * np.log(np.where(past, new, 1.0)), 0.0), -1))
    np.testing.assert_allclose(float(m["kd"]), expected, rtol=1e-5)
    assert float(m["kd"]) > 0
