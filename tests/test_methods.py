"""The contract every method keeps, and the Dark Experience Replay specifics."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods, models
from cljax.core import buffer as buffer_lib
from cljax.methods import TaskInfo
from cljax.methods.common import predict
from tests.conftest import tiny_scenario

SC = tiny_scenario()
TEST_MODELS = {
    "mlp": lambda: models.MLP((8,), SC.num_classes),
    "cnn": lambda: models.ConvNet((4, 8), SC.num_classes),
}


def make(name, model=None, **extra):
    """Method `name` at the small settings its module declares for tests."""
    module = methods.get(name)
    model = model or TEST_MODELS[getattr(module, "TEST_MODEL", "mlp")]()
    overrides = {**getattr(module, "TEST_CONFIG", {}), **extra}
    return module.make(model=model, input_fn=SC.input_fn, **overrides)


def batch(t, n=4, offset=0):
    x, y = SC.train(t)
    return {"x": jnp.asarray(x[offset : offset + n]), "y": jnp.asarray(y[offset : offset + n])}


@pytest.mark.parametrize("name", methods.names())
def test_contract(name):
    chex.clear_trace_counter()
    method = make(name)
    x0 = jnp.asarray(SC.train(0)[0][:1])
    state = method.init(jax.random.key(0), x0)
    structure = jax.tree.structure(state)
    task = TaskInfo(0, SC.classes(0), SC.classes(0), steps_per_epoch=3, num_tasks=SC.num_tasks)
    state = method.begin_task(state, task, jax.random.key(8))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, b, key):
        return method.train_step(state, b, key)

    for i in range(3):
        state, metrics = step(state, batch(0, offset=i * 4), jax.random.key(i))
        assert np.isfinite(float(metrics["loss"]))
    state = method.end_task(state, task, SC.train(0), jax.random.key(9))
    if method.host.resize is not None:
        state = method.host.resize(state, task)
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
    method_b = make("derpp", beta=0.0)
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
    # ER's one forward pass of current and replayed items (DER++'s three would triple the
    # ResNet in the program, and its compile time, for the same check)
    method = methods.get("er").make(model=model, input_fn=rgb, **methods.get("er").TEST_CONFIG)
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
        methods.get("ewc_offline")
    with pytest.raises(ValueError, match="der alpha must be >= 0"):
        methods.get("der").make(model=models.MLP(), input_fn=SC.input_fn, alpha=-1.0)
    with pytest.raises(ValueError, match="er has no setting alpha"):
        methods.get("er").make(model=models.MLP(), input_fn=SC.input_fn, alpha=1.0)


def test_registry_lists_the_methods_folder():
    assert {"sgd", "joint", "er", "der", "derpp"} <= set(methods.names())
    assert not set(methods.names()) & set(methods.SHARED)
    for name in methods.names():
        config = methods.get(name).Config()
        assert config.to_dict().keys() == set(config.names())
        assert all(line.split(" ", 1)[0] in config.names() for line in config.describe())


def test_buffer_items_are_raw_inputs():
    method = make("er")
    state = method.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
    b = batch(0)
    state, _ = method.train_step(state, b, jax.random.key(1))
    assert state.buffer.data["x"].dtype == jnp.uint8
    items = buffer_lib.gather(state.buffer, jnp.arange(4))
    np.testing.assert_array_equal(items["x"], b["x"])
