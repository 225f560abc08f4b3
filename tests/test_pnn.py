"""PNN: a frozen column per task, laterals from the earlier ones, task-IL through its column."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods, models, train
from cljax.benchmarks import scenarios
from cljax.methods import pnn
from tests.conftest import tiny_scenario

SC = tiny_scenario()
MODEL = models.MLP((8, 6), SC.num_classes)
CONFIG = train.RunConfig(batch_size=4, epochs=1)


@functools.cache
def trained(laterals: bool = True):
    """`(method, [state after task 1, after task 2])`, shared by the tests."""
    method = pnn.make(model=MODEL, input_fn=SC.input_fn, lr=0.1, laterals=laterals)
    return method, train_tasks(method, 2)


def train_tasks(method, tasks):
    """`[state after each task]`: three steps of batch 4 a task."""
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    step = jax.jit(method.train_step)
    begin = jax.jit(method.begin_task, static_argnums=1)
    after = []
    for t in range(tasks):
        state = begin(state, train.task_info(SC, CONFIG, t), jax.random.key(10 + t))
        x, y = (jnp.asarray(a) for a in SC.train(t))
        for i in range(3):
            batch = {"x": x[4 * i : 4 * i + 4], "y": y[4 * i : 4 * i + 4]}
            state, _ = step(state, batch, jax.random.key(100 * t + i))
        after.append(state)
    return after


def task_il_predictions(method, state, t):
    x, _ = SC.test(t)
    logits = np.asarray(jax.jit(method.predict)(state, jnp.asarray(x)))
    classes = list(SC.classes(t))
    return np.asarray(classes)[np.argmax(logits[:, classes], -1)], logits


def test_old_columns_stay_bit_identical_and_task_one_answers_do_not_move():
    method, (first, second) = trained()
    assert len(first.columns) == 1 and len(second.columns) == 2
    jax.tree.map(np.testing.assert_array_equal, first.columns[0], second.columns[0])
    before, logits_before = task_il_predictions(method, first, 0)
    after, logits_after = task_il_predictions(method, second, 0)
    np.testing.assert_array_equal(before, after)
    c0 = list(SC.classes(0))
    np.testing.assert_array_equal(logits_before[:, c0], logits_after[:, c0])
    # task 1's classes are scored by the second column alone
    assert list(np.asarray(second.owner)[list(SC.classes(1))]) == [1] * len(SC.classes(1))


def column_outputs(method, state, x):
    """Column 1's logits, recomputed by hand from the parameters (the paper's eq. 2)."""
    x = SC.input_fn(jnp.asarray(x), None, False).reshape(len(x), -1)
    p0, p1 = state.columns
    dense = lambda p, a: a @ p["kernel"] + p.get("bias", 0.0)  # noqa: E731

    def lateral(p, a):
        return dense(p["Dense_1"], jax.nn.relu(dense(p["Dense_0"], a * p["alpha"])))

    h0 = [jax.nn.relu(dense(p0["Dense_0"], x))]
    h0.append(jax.nn.relu(dense(p0["Dense_1"], h0[0])))
    h1 = jax.nn.relu(dense(p1["Dense_0"], x))
    h1 = jax.nn.relu(dense(p1["Dense_1"], h1) + lateral(p1["Lateral_0"], h0[0]))
    return dense(p1["Dense_2"], h1) + lateral(p1["Lateral_1"], h0[1])


def test_second_column_reads_the_first_through_its_adapters():
    method, (_, state) = trained()
    x, _ = SC.test(1)
    expected = column_outputs(method, state, x)
    logits = method.predict(state, jnp.asarray(x))
    c1 = list(SC.classes(1))
    np.testing.assert_allclose(logits[:, c1], expected[:, c1], rtol=1e-5, atol=1e-5)
    alpha = state.columns[1]["Lateral_0"]["alpha"]
    assert alpha.shape == (8,) and bool((alpha != 0).any())
    # changing the frozen first column changes the second column's answers: the laterals are live
    bumped = state.replace(
        columns=(jax.tree.map(lambda a: a * 1.5, state.columns[0]), state.columns[1])
    )
    assert not np.allclose(method.predict(bumped, jnp.asarray(x))[:, c1], logits[:, c1])


def test_without_laterals_columns_are_independent_as_in_mammoth():
    method, (_, state) = trained(laterals=False)
    assert not any(name.startswith("Lateral") for name in state.columns[1])
    x = jnp.asarray(SC.test(1)[0])
    bumped = state.replace(
        columns=(jax.tree.map(lambda a: a * 1.5, state.columns[0]), state.columns[1])
    )
    c1 = list(SC.classes(1))
    np.testing.assert_array_equal(method.predict(bumped, x)[:, c1], method.predict(state, x)[:, c1])


def test_pnn_refuses_domain_il_benchmarks_and_other_backbones():
    x, y = SC.train(0)
    domain = scenarios.Scenario(
        name="tiny-domain",
        num_tasks=2,
        num_classes=SC.num_classes,
        settings=("domain-il",),
        model="mlp",
        input_fn=SC.input_fn,
        train=lambda t: (x, y),
        test=lambda t: (x, y),
        classes=lambda t: tuple(range(SC.num_classes)),
        train_sizes=(len(y), len(y)),
    )
    method = pnn.make(model=MODEL, input_fn=SC.input_fn)
    with pytest.raises(ValueError, match="can only be scored in task-il"):
        train.run(method, domain, CONFIG)
    with pytest.raises(ValueError, match="repeats classes"):
        method.begin_task(
            method.init(jax.random.key(0), x[:1]),
            train.task_info(domain, CONFIG, 1),
            jax.random.key(1),
        )
    with pytest.raises(ValueError, match="mlp backbone"):
        methods.get("pnn").make(model=models.ConvNet((4,), 4), input_fn=SC.input_fn)
