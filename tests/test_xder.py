"""X-DER (`xder`, `xder_ce`, `xder_rpc`): its mechanisms checked by hand, and the strong
augmentation of its contrastive views against torch and the standard library."""

import colorsys
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods, models
from cljax.benchmarks import augment
from cljax.methods import TaskInfo
from cljax.methods.xder import head_supcon, update_logits
from cljax.models.heads import regular_simplex
from tests.conftest import tiny_scenario

SC = tiny_scenario()
EVERY = [SC.classes(t) for t in range(SC.num_tasks)]
K = 2  # classes a task


@functools.cache
def compiled(name="xder", minibatch_size=4):
    """The method at the tests' settings, its step and end_task jitted (one compile each for
    the whole file)."""
    settings = {"buffer_size": 16, "minibatch_size": minibatch_size}
    if name == "xder":
        settings["simclr_batch_size"] = 4
    method = methods.get(name).make(
        model=models.MLP((8,), SC.num_classes), input_fn=SC.input_fn, **settings
    )
    return method, jax.jit(method.train_step), jax.jit(method.end_task, static_argnums=1)


def make(name="xder", **kw):
    return compiled(name, **kw)[0]


def outputs(state, x):
    """The network's outputs on raw `x` (the tiny scenario's inputs are not augmented)."""
    return np.asarray(state.net.apply_fn({"params": state.net.params}, SC.input_fn(x, None, True)))


def update_by_hand(old, new, y, cols, gamma):
    out = old.copy()
    for i in range(len(y)):
        window = new[i, cols]
        g = old[i, y[i]]
        if window.max() > g:
            window = window * gamma * g / window.max()
        out[i, cols] = window
    return out


def test_update_logits_rescales_the_window_against_the_stored_true_logit():
    rng = np.random.default_rng(0)
    old = rng.normal(size=(6, 6)).astype(np.float32)
    new = rng.normal(size=(6, 6)).astype(np.float32) * 3
    y = np.array([0, 1, 0, 1, 2, 3])
    old[2, 0] = 10.0  # a window whose largest is below the true logit: copied as is
    window = np.arange(6) >= 2
    got = np.asarray(
        update_logits(jnp.asarray(old), jnp.asarray(new), jnp.asarray(y), window, 0.85)
    )
    want = update_by_hand(old, new, y, slice(2, 6), 0.85)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_array_equal(got[:, :2], old[:, :2])
    np.testing.assert_array_equal(got[2, 2:], new[2, 2:])


def supcon_by_hand(feats, labels, temp):
    """Khosla et al.'s SupCon as Mammoth's utils/simclrloss.py, contrast mode 'all',
    base temperature = temperature, reduction 'sum': `feats` `(N, V, D)` L2-normalised."""
    n, v, _ = feats.shape
    flat = feats.transpose(1, 0, 2).reshape(n * v, -1)  # view-major, as torch.unbind(dim=1)
    lab = np.tile(labels, v)
    sims = flat @ flat.T / temp
    loss = np.zeros(n * v)
    for a in range(n * v):
        others = [b for b in range(n * v) if b != a]
        log_den = np.log(np.sum(np.exp(sims[a, others])))
        pos = [b for b in others if lab[b] == lab[a]]
        loss[a] = -np.mean([sims[a, b] - log_den for b in pos])
    return loss.reshape(v, n).mean(axis=0).sum()


def test_head_supcon_is_supcon_in_each_heads_normalised_space():
    rng = np.random.default_rng(1)
    n, v, heads = 5, 3, 3
    z = rng.normal(size=(n * v, heads * K)).astype(np.float32)  # the V views of an image adjacent
    labels = np.array([0, 1, 0, 2, 1])
    head = np.arange(heads * K) // K
    used = (np.arange(heads * K) >= 1) & (np.arange(heads * K) < heads)  # heads 1 and 2
    supcon = jax.jit(head_supcon, static_argnums=(5, 6))
    got = np.asarray(
        supcon(jnp.asarray(z), jnp.repeat(labels, v), jnp.ones(n * v), head, used, 5.0, v)
    )
    for h in range(heads * K):
        if not used[h]:
            assert got[h] == 0.0
            continue
        f = z[:, h * K : (h + 1) * K].reshape(n, v, K)
        f = f / np.linalg.norm(f, axis=-1, keepdims=True)
        np.testing.assert_allclose(got[h], supcon_by_hand(f, labels, 5.0), rtol=1e-5)
    # a padded image (weight 0) changes nothing
    z_pad = np.concatenate([z, rng.normal(size=(v, heads * K)).astype(np.float32)])
    lab_pad = np.repeat(np.append(labels, 0), v)
    w = np.append(np.ones(n * v), np.zeros(v))
    padded = supcon(jnp.asarray(z_pad), lab_pad, jnp.asarray(w), head, used, 5.0, v)
    np.testing.assert_allclose(np.asarray(padded), got, rtol=1e-5)


def steps(method, state, t, n, seed, step):
    """`n` steps (`step`, jitted) on task t's first items, batches of 4."""
    x, y = SC.train(t)
    for i in range(n):
        b = {"x": jnp.asarray(x[4 * i : 4 * i + 4]), "y": y[4 * i : 4 * i + 4]}
        state, _ = step(state, b, jax.random.key(seed + i))
    return state


def trained_to_second_task(name="xder", **kw):
    method, step, _ = compiled(name, **kw)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    t0 = TaskInfo.of(0, EVERY, batch_size=4)
    state = method.begin_task(state, t0, jax.random.key(1))
    state = steps(method, state, 0, 3, 10, step)
    assert int(state.buffer.size) == 0  # nothing is stored during a task
    return method, state


def test_end_task_stores_a_balanced_memory_and_rewrites_the_future_heads_of_past_items():
    method, state = trained_to_second_task()
    t0, t1 = TaskInfo.of(0, EVERY, batch_size=4), TaskInfo.of(1, EVERY, batch_size=4)
    end_task = compiled()[2]
    state = end_task(state, t0, SC.train(0), jax.random.key(5))
    buf = state.buffer
    y = np.asarray(buf.data["y"])
    assert int(buf.size) == 16 and np.bincount(y, minlength=4).tolist() == [8, 8, 0, 0]
    # the responses stored at the first task's end: the network's outputs, as they are
    np.testing.assert_allclose(
        buf.data["logits"], outputs(state, buf.data["x"]), rtol=1e-5, atol=1e-6
    )
    state = method.begin_task(state, t1, jax.random.key(6))
    state = steps(method, state, 1, 2, 20, compiled()[1])
    before = state.buffer
    state2 = end_task(state, t1, SC.train(1), jax.random.key(7))
    buf = state2.buffer
    y = np.asarray(buf.data["y"])
    # the past classes cut to 16 // 4 a class (their first items), the new ones 4 each
    assert int(buf.size) == 16 and np.bincount(y, minlength=4).tolist() == [4, 4, 4, 4]
    old_y = np.asarray(before.data["y"])
    for c in (0, 1):
        first = np.flatnonzero(old_y == c)[:4]
        kept = np.flatnonzero(y == c)
        np.testing.assert_array_equal(buf.data["x"][kept], before.data["x"][first])
        stored = np.asarray(before.data["logits"])[first]
        want = update_by_hand(
            stored, outputs(state, before.data["x"][first]), np.full(4, c), slice(2, 4), 0.85
        )
        np.testing.assert_allclose(buf.data["logits"][kept], want, rtol=1e-5, atol=1e-6)
    new = np.flatnonzero(y >= 2)
    z = outputs(state, buf.data["x"][new])
    want = update_by_hand(z, z, y[new], slice(0, 2), 0.85)  # its past head against its own logit
    np.testing.assert_allclose(buf.data["logits"][new], want, rtol=1e-5, atol=1e-6)
    assert float(jnp.sum(state2.counter)) == 0


def test_a_training_step_rewrites_the_current_and_future_heads_of_the_drawn_past_items():
    method, state = trained_to_second_task(minibatch_size=6)
    _, step, end_task = compiled("xder", 6)
    t0, t1 = TaskInfo.of(0, EVERY, batch_size=4), TaskInfo.of(1, EVERY, batch_size=4)
    state = end_task(state, t0, SC.train(0), jax.random.key(5))
    state = method.begin_task(state, t1, jax.random.key(6))
    b = {"x": jnp.asarray(SC.train(1)[0][:4]), "y": SC.train(1)[1][:4]}
    before = state
    state, _ = step(state, b, jax.random.key(30))
    drawn = np.flatnonzero(np.asarray(state.counter))
    # two draws of 6 from 16: every distinct item counted once, accepted at its first draw
    assert 6 <= len(drawn) <= 12 and set(np.asarray(state.counter)[drawn]) == {1.0}
    old = np.asarray(before.buffer.data["logits"])
    new = np.asarray(state.buffer.data["logits"])
    y = np.asarray(state.buffer.data["y"])
    z = outputs(before, before.buffer.data["x"])  # the outputs before the step's update
    want = update_by_hand(old, z, y, slice(2, 4), 0.85)
    np.testing.assert_allclose(new[drawn], want[drawn], rtol=1e-5, atol=1e-6)
    rest = np.setdiff1d(np.arange(16), drawn)
    np.testing.assert_array_equal(new[rest], old[rest])
    np.testing.assert_array_equal(new[:, :2], old[:, :2])  # the past head is never rewritten
    # drawn again, an item is rewritten with probability 1 / its count
    accepted = total = 0
    for i in range(40):
        s, _ = step(state, b, jax.random.key(100 + i))
        twice = np.asarray(s.counter) == 2
        changed = np.any(np.asarray(s.buffer.data["logits"]) != new, axis=1)
        accepted += changed[twice].sum()
        total += twice.sum()
    assert 0.35 < accepted / total < 0.65


def test_xder_rpc_scores_through_the_fixed_simplex_and_xder_ce_has_no_contrastive_term():
    method, state = trained_to_second_task("xder_rpc")
    x = SC.test(0)[0][:5]
    simplex = regular_simplex(SC.num_classes)
    np.testing.assert_allclose(
        method.predict(state, x), outputs(state, x)[:, :-1] @ simplex, rtol=1e-5, atol=1e-6
    )
    assert "lambd" not in methods.get("xder_ce").Config.names()


def test_heads_must_be_column_blocks_of_tasks_in_label_order():
    method = make()
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    with pytest.raises(ValueError, match="label order"):
        method.begin_task(state, TaskInfo(0, (1, 0), num_tasks=2), jax.random.key(1))
    with pytest.raises(ValueError, match="outputs"):
        method.begin_task(state, TaskInfo(0, (0, 1), num_tasks=3), jax.random.key(1))


# ---------------------------------------------------------------- the strong augmentation

torch = pytest.importorskip("torch", reason="the torch comparison needs torch (pip install torch)")


@pytest.mark.parametrize("box", [(0, 0, 3, 5), (2, 1, 6, 4), (0, 0, 8, 8), (5, 3, 3, 3)])
def test_resized_crop_is_torchs_bilinear_resize_of_the_crop(box):
    rng = np.random.default_rng(2)
    img = rng.uniform(size=(8, 8, 3)).astype(np.float32)
    top, left, h, w = box
    crop = torch.from_numpy(img[top : top + h, left : left + w]).permute(2, 0, 1)[None]
    want = torch.nn.functional.interpolate(crop, size=(8, 8), mode="bilinear", align_corners=False)
    got = augment.resized_crop(jnp.asarray(img), top, left, h, w)
    np.testing.assert_allclose(got, want[0].permute(1, 2, 0).numpy(), rtol=1e-5, atol=1e-6)


def test_hue_shift_is_the_hsv_rotation_of_the_standard_library():
    rng = np.random.default_rng(3)
    img = rng.uniform(size=(4, 4, 3)).astype(np.float32)
    img[0, 0] = (0.5, 0.5, 0.5)  # grey: no hue
    for shift in (-0.1, 0.07):
        got = np.asarray(jax.jit(augment.adjust_hue)(jnp.asarray(img), shift))
        for px, out in zip(img.reshape(-1, 3), got.reshape(-1, 3), strict=True):
            h, s, v = colorsys.rgb_to_hsv(*px)
            np.testing.assert_allclose(out, colorsys.hsv_to_rgb((h + shift) % 1.0, s, v), atol=1e-5)


def test_crop_params_follow_torchvisions_bounds():
    keys = jax.random.split(jax.random.key(4), 500)
    top, left, h, w = jax.jit(jax.vmap(lambda k: augment.crop_params(k, 28, 28)))(keys)
    top, left, h, w = (np.asarray(a) for a in (top, left, h, w))
    assert (h >= 1).all() and (w >= 1).all() and (top + h <= 28).all() and (left + w <= 28).all()
    area = h * w / 28**2
    assert area.min() >= 0.18 and area.max() <= 1.0 and 0.5 < area.mean() < 0.7
    ratio = w / h
    assert ratio.min() >= 0.7 and ratio.max() <= 1.45


def test_strong_augment_keeps_shape_and_range_and_one_channel_has_no_colour():
    rng = np.random.default_rng(5)
    gray = rng.uniform(size=(6, 10, 10)).astype(np.float32)
    strong = jax.jit(augment.strong_augment)
    out = np.asarray(strong(jnp.asarray(gray), jax.random.key(0)))
    assert out.shape == gray.shape and out.min() >= 0 and out.max() <= 1
    rgb = np.repeat(gray[..., None], 3, axis=-1)  # a grey RGB image stays grey
    out = np.asarray(strong(jnp.asarray(rgb), jax.random.key(0)))
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)
    np.testing.assert_allclose(out[..., 1], out[..., 2], atol=1e-5)
