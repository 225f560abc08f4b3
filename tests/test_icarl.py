"""iCaRL: nearest-mean-of-exemplars prediction, distillation targets, and the exemplars
shuffled into each task's training data by the driver (`Method.train_pool`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from cljax import methods, models, train
from cljax.methods import Method, icarl
from cljax.run import plan_run
from tests.conftest import tiny_scenario

SC = tiny_scenario()
MODEL = models.MLP((8,), SC.num_classes)
CONFIG = train.RunConfig(batch_size=4, epochs=1)


def after_first_task(**overrides):
    method = icarl.make(model=MODEL, input_fn=SC.input_fn, buffer_size=6, **overrides)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    info = train.task_info(SC, CONFIG, 0)
    state = method.begin_task(state, info, jax.random.key(1))
    x, y = (jnp.asarray(a) for a in SC.train(0))
    step = jax.jit(method.train_step)
    for i in range(3):
        state, _ = step(state, {"x": x[4 * i : 4 * i + 4], "y": y[4 * i : 4 * i + 4]}, None)
    end = jax.jit(method.end_task, static_argnums=1)
    return method, end(state, info, (x, y), jax.random.key(2)), info


def hand_features(state, x_raw, normalize):
    """The hidden layer's output, computed from the parameters."""
    p = state.net.params["Dense_0"]
    x = SC.input_fn(jnp.asarray(x_raw), None, False).reshape(len(x_raw), -1)
    f = np.asarray(jax.nn.relu(x @ p["kernel"] + p["bias"]), np.float64)
    return f / np.linalg.norm(f, axis=1, keepdims=True) if normalize else f


@pytest.mark.parametrize("normalize", [True, False])
def test_prediction_is_the_nearest_class_mean_of_exemplar_features(normalize):
    method, state, info = after_first_task(normalize=normalize)
    mem = state.memory
    valid = np.asarray(mem.valid)
    assert valid.sum() == 6  # 3 per class of the first task
    feats = hand_features(state, np.asarray(mem.x)[valid], normalize)
    labels = np.asarray(mem.y)[valid]
    x_test, y_test = SC.test(0)
    f_test = hand_features(state, x_test, normalize)
    expected, dists = [], []
    classes = sorted(set(labels.tolist()))
    for c in classes:
        mu = feats[labels == c].mean(0)
        mu = mu / np.linalg.norm(mu) if normalize else mu
        dists.append(((f_test - mu) ** 2).sum(1))
    expected = np.asarray(classes)[np.argmin(np.stack(dists, 1), 1)]
    logits = np.asarray(jax.jit(method.predict)(state, jnp.asarray(x_test)))
    np.testing.assert_array_equal(np.argmax(logits, 1), expected)
    np.testing.assert_allclose(logits[:, classes], -np.stack(dists, 1), rtol=1e-4, atol=1e-5)
    assert (logits[:, [c for c in range(SC.num_classes) if c not in classes]] <= -1e8).all()


def test_herding_picks_in_order_and_old_classes_keep_their_first_exemplars():
    _, state, _ = after_first_task()
    mem = state.memory
    valid = np.asarray(mem.valid)
    assert sorted(np.asarray(mem.rank)[valid].tolist()) == [0, 0, 1, 1, 2, 2]
    # the first pick of a class is its item whose (normalised) feature is nearest the class mean
    x, y = SC.train(0)
    f = hand_features(state, x, True)
    for c in SC.classes(0):
        mu = f[y == c].mean(0)
        first = np.flatnonzero(y == c)[np.argmin(((f[y == c] - mu) ** 2).sum(1))]
        slot = np.flatnonzero(valid & (np.asarray(mem.y) == c) & (np.asarray(mem.rank) == 0))
        np.testing.assert_array_equal(np.asarray(mem.x)[slot[0]], x[first])


def test_loss_targets_old_classes_by_the_previous_network_and_new_ones_by_labels():
    method, state, _ = after_first_task()
    info = train.task_info(SC, CONFIG, 1)
    state = method.begin_task(state, info, jax.random.key(3))
    jax.tree.map(np.testing.assert_array_equal, state.teacher, state.net.params)
    moved = state.replace(
        net=state.net.replace(params=jax.tree.map(lambda p: p * 0.9, state.net.params))
    )
    x, y = SC.train(1)
    batch = {"x": jnp.asarray(x[:4]), "y": jnp.asarray(y[:4])}
    _, metrics = jax.jit(method.train_step)(moved, batch, None)
    prepared = SC.input_fn(batch["x"], None, False)
    apply = lambda p: np.asarray(MODEL.apply({"params": p}, prepared))  # noqa: E731
    old, new = apply(state.teacher), apply(moved.net.params)
    seen = list(info.seen)
    targets = np.eye(SC.num_classes)[y[:4]]
    past = [c for c in seen if c not in info.classes]
    targets[:, past] = 1 / (1 + np.exp(-old[:, past]))
    bce = optax.sigmoid_binary_cross_entropy(new[:, seen], targets[:, seen])
    np.testing.assert_allclose(float(metrics["bce"]), float(np.mean(bce)), rtol=1e-5)


def test_truncated_replay_keeps_only_full_pixels_as_one():
    method, state, _ = after_first_task(replay_images="uint8-truncated")
    x, _, valid = method.train_pool(state, SC.train(0)[0][:1])
    raw = np.asarray(state.memory.x)
    np.testing.assert_array_equal(np.asarray(x), (raw == 255).astype(np.uint8))
    exact, _, _ = icarl.make(model=MODEL, input_fn=SC.input_fn).train_pool(state, None)
    np.testing.assert_array_equal(np.asarray(exact), raw)


def test_buffer_smaller_than_the_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot hold 1 exemplars of each of the 2 classes"):
        after_first_task_with(buffer_size=1)
    with pytest.raises(ValueError, match="cannot hold 3 exemplars of each of the 2 classes"):
        after_first_task_with(buffer_size=5, per_class=3)


def test_van_de_vens_icarl_keeps_a_fixed_budget_a_class_and_its_loss():
    """`per_class`: that many exemplars a class, however many classes are seen; the loss,
    `temperature` 2 and `reduction` sum: the BCE summed over the seen classes, the earlier
    ones' targets sigmoid(old / 2) (hand-computed)."""
    state = after_first_task_with(buffer_size=12, per_class=3)
    assert int(state.memory.valid.sum()) == 2 * 3
    method = icarl.make(
        model=MODEL, input_fn=SC.input_fn, temperature=2.0, reduction="sum", buffer_size=12
    )
    info = train.task_info(SC, CONFIG, 1)
    state = method.begin_task(state, info, None)
    teacher = jax.tree.map(lambda p: p * 1.3, state.net.params)
    state = state.replace(teacher=teacher)
    x, y = SC.train(1)
    batch = {"x": x[:6], "y": y[:6]}
    _, out = method.train_step(state, batch, None)
    inputs = SC.input_fn(batch["x"], None, True)
    logits = np.asarray(state.net.apply_fn({"params": state.net.params}, inputs))
    old = np.asarray(state.net.apply_fn({"params": teacher}, inputs))
    seen = np.asarray(state.past | state.current)
    targets = np.where(
        np.asarray(state.past), 1 / (1 + np.exp(-old / 2)), np.eye(logits.shape[1])[y[:6]]
    )
    bce = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    want = (bce * seen).sum() / 6
    np.testing.assert_allclose(float(out["loss"]), want, rtol=1e-5)


def after_first_task_with(**kw):
    method = icarl.make(model=MODEL, input_fn=SC.input_fn, **kw)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    info = train.task_info(SC, CONFIG, 0)
    return method.end_task(state, info, SC.train(0), jax.random.key(2))


@struct.dataclass
class Counting:
    """A method that counts what its steps were fed."""

    pool_x: jax.Array
    pool_y: jax.Array
    pool_valid: jax.Array
    fed: jax.Array  # (3,): items labelled 99 (pool), their pixel sum, all items


def test_driver_shuffles_the_valid_pool_items_into_every_epoch():
    n_valid = 3
    pool_x = jnp.full((4, *SC.train(0)[0].shape[1:]), 7, jnp.uint8)
    pool_y = jnp.full(4, 99, jnp.int32)
    pool_valid = jnp.arange(4) < n_valid

    def init(key, example_x):
        return Counting(pool_x, pool_y, pool_valid, jnp.zeros(3, jnp.float32))

    def train_step(state, batch, key):
        from_pool = batch["y"] == 99
        pix = jnp.sum(jnp.where(from_pool[:, None, None], batch["x"], 0).astype(jnp.float32))
        fed = state.fed + jnp.stack([from_pool.sum(), pix, batch["y"].shape[0]])
        return state.replace(fed=fed), {"loss": jnp.zeros(())}

    method = Method(
        name="counting",
        config=methods.get("sgd").Config(),
        init=init,
        train_step=train_step,
        predict=lambda state, x: jnp.zeros((x.shape[0], SC.num_classes)),
        train_pool=lambda s, example_x: (s.pool_x, s.pool_y, s.pool_valid),
    )
    epochs = 2
    res = train.run(method, SC, train.RunConfig(batch_size=5, epochs=epochs, progress=False))
    fed = np.asarray(res["state"].fed)[0]
    n_task = sum(SC.train_sizes)
    # each epoch: every task item and each valid pool item once (the last batch short)
    per_task = [epochs * (n + n_valid) for n in SC.train_sizes]
    assert fed[2] == sum(per_task)
    assert fed[0] == epochs * n_valid * SC.num_tasks
    assert fed[1] == fed[0] * 7 * pool_x[0].size  # never an invalid slot, never a mapped copy
    assert n_task > 0


def test_plan_numbers_pool_items_negatively_each_once_an_epoch():
    method = icarl.make(model=MODEL, input_fn=SC.input_fn, buffer_size=8)
    config = train.RunConfig(batch_size=4, epochs=2, seeds=(0, 1))
    task = plan_run(method, SC, config).task(0, 10, pool=6)
    idx, valid = task.idx, task.valid
    steps = int(valid.sum())
    assert steps == 2 * 4  # ceil(16 / 4) a epoch
    for seed_idx in idx[:, :steps]:
        epoch = seed_idx[:4].ravel()[:16]
        assert sorted(epoch.tolist()) == [-6, -5, -4, -3, -2, -1, *range(10)]
