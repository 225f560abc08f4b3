"""The contract every method keeps, and the Dark Experience Replay specifics."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import buffer as buffer_lib
from cljax import methods, models
from cljax.methods import TaskInfo
from cljax.methods.common import predict
from tests.conftest import tiny_scenario

SC = tiny_scenario()
SMALL = {"buffer_size": 16, "minibatch_size": 4}
HP = {
    "sgd": {},
    "joint": {},
    "er": SMALL,
    "der": {**SMALL, "alpha": 0.5},
    "derpp": {**SMALL, "alpha": 0.5, "beta": 0.5},
    "dgr": {"n_critic": 2, "z_dim": 8},
    "mergan": {"n_critic": 2, "z_dim": 8},
    "dgm": {"n_critic": 2, "z_dim": 8, "hidden": 8},
    "dyn_expand": {"buffer_size": 8, "minibatch_size": 4, "retrain_epochs": 2},
}


def make(name, model=None, **extra):
    if model is None and name == "dyn_expand":
        model = models.ConvNet((4, 8), SC.num_classes)
    model = model or models.MLP((8,), SC.num_classes)
    return methods.get(name).make(model=model, input_fn=SC.input_fn, **HP[name], **extra)


def batch(t, n=4, offset=0):
    x, y = SC.train(t)
    return {"x": jnp.asarray(x[offset : offset + n]), "y": jnp.asarray(y[offset : offset + n])}


@pytest.mark.parametrize("name", methods.NAMES)
def test_contract(name):
    chex.clear_trace_counter()
    method = make(name)
    x0 = jnp.asarray(SC.train(0)[0][:1])
    state = method.init(jax.random.key(0), x0)
    structure = jax.tree.structure(state)
    task = TaskInfo(0, SC.classes(0), SC.classes(0), steps_per_epoch=3)
    state = method.begin_task(state, task, jax.random.key(8))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, b, key):
        return method.train_step(state, b, key)

    for i in range(3):
        state, metrics = step(state, batch(0, offset=i * 4), jax.random.key(i))
        assert np.isfinite(float(metrics["loss"]))
    state = method.end_task(state, SC.train(0), jax.random.key(9), task)
    if method.resize is not None:
        state = method.resize(state, task)
    assert jax.tree.structure(state) == structure
    logits = method.predict(state, jnp.asarray(SC.test(0)[0]))
    assert logits.shape == (len(SC.test(0)[1]), SC.num_classes)
    assert method.name == name


@pytest.mark.parametrize("name", ["der", "derpp"])
def test_dark_stores_training_logits_and_never_rewrites_them(name):
    method = make(name)
    state = method.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
    b = batch(0)
    before = predict(state.net, SC.input_fn(b["x"], None, False))
    state, _ = jax.jit(method.train_step)(state, b, jax.random.key(1))
    buf = state.buffer
    assert int(buf.size) == 4
    # The stored logits are those of the forward pass before this step's update.
    np.testing.assert_allclose(buf.data["logits"][:4], before, rtol=1e-5, atol=1e-5)
    stored = np.asarray(buf.data["logits"][:4])
    after = predict(state.net, SC.input_fn(b["x"], None, False))
    assert not np.allclose(after, before)
    # Further steps (buffer not full) leave the stored rows untouched.
    state, _ = jax.jit(method.train_step)(state, batch(0, offset=4), jax.random.key(2))
    np.testing.assert_array_equal(state.buffer.data["logits"][:4], stored)


def test_derpp_beta_term_uses_buffer_labels():
    """beta > 0 changes the update only through the replayed cross-entropy."""
    method_a = make("derpp")
    method_b = methods.get("derpp").make(
        model=models.MLP((8,), SC.num_classes), input_fn=SC.input_fn, **{**HP["derpp"], "beta": 0.0}
    )
    state = method_a.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
    state, _ = method_a.train_step(state, batch(0), jax.random.key(1))
    sa, la = method_a.train_step(state, batch(1), jax.random.key(2))
    sb, lb = method_b.train_step(state, batch(1), jax.random.key(2))
    assert float(la["loss"]) > float(lb["loss"])


def test_er_equals_sgd_on_empty_buffer():
    er, sgd = make("er", lr=0.05), make("sgd", lr=0.05)
    x0 = jnp.asarray(SC.train(0)[0][:1])
    s_er, s_sgd = er.init(jax.random.key(0), x0), sgd.init(jax.random.key(0), x0)
    s_er, _ = er.train_step(s_er, batch(0), jax.random.key(1))
    s_sgd, _ = sgd.train_step(s_sgd, batch(0), jax.random.key(1))
    chex.assert_trees_all_close(s_er.net.params, s_sgd.net.params, atol=1e-6)


def test_resnet_step_updates_batch_stats():
    model = models.ResNet18(num_classes=SC.num_classes, nf=2)
    rgb = lambda x, key, train: jnp.repeat(SC.input_fn(x, key, train)[..., None], 3, -1)
    method = methods.get("derpp").make(model=model, input_fn=rgb, **HP["derpp"])
    state = method.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
    stats0 = state.net.batch_stats
    state, m = jax.jit(method.train_step)(state, batch(0), jax.random.key(1))
    assert np.isfinite(float(m["loss"]))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats0, state.net.batch_stats)
    assert any(jax.tree.leaves(changed))


def test_bad_hparams_are_clear():
    with pytest.raises(ValueError, match="buffer_size"):
        methods.get("der").make(model=models.MLP(), input_fn=SC.input_fn, buffer_size=0)
    with pytest.raises(ValueError, match="unknown method"):
        methods.get("ewc")


def test_buffer_items_are_raw_inputs():
    method = make("er")
    state = method.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
    b = batch(0)
    state, _ = method.train_step(state, b, jax.random.key(1))
    assert state.buffer.data["x"].dtype == jnp.uint8
    items = buffer_lib.gather(state.buffer, jnp.arange(4))
    np.testing.assert_array_equal(items["x"], b["x"])
