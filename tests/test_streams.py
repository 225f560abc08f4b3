"""Streams without task boundaries: MNIST-360's construction, the in-step rotation, the
refusal of methods that need boundaries, and a stream run resumed mid-way."""

import dataclasses
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods, models, train
from cljax.benchmarks import scenarios, streams
from cljax.run import plan
from cljax.run.checkpoint_io import CheckpointError

PER_CLASS = 11  # 6 chunks of 2 (the last of 1): 11 // 6 + 1


def tiny_arrays(per_class=PER_CLASS, test_per_class=4, size=6, seed=0):
    """MNIST-like arrays of classes 0-9 (9 is dropped by the stream), `size`-square images."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.repeat(np.arange(10), n).astype(np.int32)
        x = (rng.integers(0, 60, (len(y), size, size)) + 19 * y[:, None, None]).astype(np.uint8)
        return x, y

    return (*make(per_class), *make(test_per_class))


def test_the_stream_takes_mammoths_pairs_chunks_and_angles_on_a_small_case():
    """Built by hand from Mammoth's `mnist_360.py`: chunks of 2, used last first (the last,
    of 1 item, first); pairs (0,1), (1,2), ...; each batch split by the items left."""
    _, y, _, _ = tiny_arrays()
    items, angles = streams.mnist360_stream(y, batch_size=2, seed=0)
    classes = y[items]
    # pair (0, 1): one item each in their last chunks -> one batch [0, 1]
    # pair (1, 2): class 1's chunk 4 (2 left), class 2's chunk 5 (1 left):
    #   round(2/3 * 2) = 1 of class 1, 1 of class 2 -> class 2 used up, pair ends
    # pair (2, 3): class 2's chunk 4 (2), class 3's chunk 5 (1): the same
    want_start = [0, 1, 1, 2, 2, 3]
    np.testing.assert_array_equal(classes[: len(want_start)], want_start)
    # every item comes from the chunk its pair uses: class 1's second draw from chunk 4
    chunk = lambda j, k: np.flatnonzero(y == j)[2 * k : 2 * k + 2]  # noqa: E731
    assert items[0] in chunk(0, 5) and items[1] in chunk(1, 5) and items[2] in chunk(1, 4)
    # the k-th draw of class j is rotated by (60 (j - 1) + k 360 / N_j) mod 360
    for j in range(9):
        k = np.arange((classes == j).sum())
        want = (60.0 * (j - 1) + k * 360.0 / PER_CLASS) % 360.0
        np.testing.assert_allclose(angles[classes == j], want, rtol=1e-6, atol=1e-4)
    assert set(classes.tolist()) == set(range(9))


def test_the_streams_batches_are_mammoths_short_at_a_pairs_end():
    """Batch 3, by hand from `get_train_data`: pair (0, 1) has 1 item of each left -> one
    batch of 2 (round(1/2 * 3) = 2 capped at 1, then 1); pairs (1, 2) ... (7, 8) have 2 and 1
    -> one batch of 3 each; (8, 0) has 2 and 2 -> 2 + 1, class 8 used up: one of 3."""
    _, y, _, _ = tiny_arrays()
    items, _, batches = streams.mnist360_stream(y, 3, seed=0, batches=True)
    assert batches[:9].tolist() == [2] + [3] * 8
    assert batches.sum() == len(items) and batches.max() == 3
    idx, sizes = plan.stream_rows(batches, 3)
    assert idx.shape == (len(batches), 3) and idx[0].tolist() == [0, 1, 0]
    assert idx[1].tolist() == [2, 3, 4] and sizes.tolist() == batches.tolist()


def test_items_differ_by_seed_but_classes_and_angles_do_not():
    _, y, _, _ = tiny_arrays()
    i0, a0 = streams.mnist360_stream(y, 3, seed=0)
    i1, a1 = streams.mnist360_stream(y, 3, seed=1)
    np.testing.assert_array_equal(y[i0], y[i1])
    np.testing.assert_array_equal(a0, a1)
    assert (i0 != i1).any()


def test_rotate_in_jit_equals_the_numpy_rotation_map():
    x = np.random.default_rng(0).integers(0, 255, (7, 9, 9)).astype(np.uint8)
    angles = np.array([0, 30, 90, 145.5, 200, 270, 359], np.float32)
    got = np.asarray(jax.jit(streams.rotate)(jnp.asarray(x), jnp.asarray(angles)))
    for xi, a, g in zip(x, angles, got, strict=True):
        np.testing.assert_array_equal(g, scenarios.rotation(float(a), (9, 9))(xi[None])[0])


def test_mnist360_on_the_real_files_is_mammoths_class_sequence(mnist_dir):
    """The classes of the stream, item by item, as Mammoth 7ab9db9's MNIST360 draws them
    (its `get_train_data` run to the end at batch sizes 16 and 1; sha256 of the int8 labels)."""
    sc = scenarios.build("mnist-360", mnist_dir)
    _, y = sc.train(0)
    for batch, n, digest in ((16, 54051, "ef1d3c90ed6164df"), (1, 54024, "761600695669b974")):
        items, _ = sc.stream(0, batch)
        assert len(items) == n
        assert hashlib.sha256(y[items].astype(np.int8).tobytes()).hexdigest()[:16] == digest
    x_te, y_te = sc.test(0)
    assert len(y_te) == 8991 and set(np.unique(y_te)) == set(range(9))


STREAM = streams.mnist360(tiny_arrays(), scenarios.scaled_input(255.0))
MODEL = models.MLP((8,), 10)
CONFIG = dict(batch_size=4, chunks_per_task=5, progress=False, eval_batch=64)


def test_a_method_that_needs_task_boundaries_is_refused_on_a_stream():
    for name, extra in (("agem", {"buffer_size": 18}), ("ewc_on", {}), ("icarl", {})):
        method = methods.get(name).make(model=MODEL, input_fn=STREAM.input_fn, **extra)
        # iCaRL is refused first for its settings (class-IL and task-IL only, as Mammoth)
        reason = "can only be scored in class-il" if name == "icarl" else "needs task boundaries"
        with pytest.raises(ValueError, match=reason):
            train.run(method, STREAM, train.RunConfig(**CONFIG))
    method = methods.get("er").make(model=MODEL, input_fn=STREAM.input_fn, buffer_size=8)
    with pytest.raises(ValueError, match="stream, seen once"):
        train.run(method, STREAM, train.RunConfig(epochs=2, **CONFIG))


def test_a_stream_run_resumed_mid_way_equals_an_uninterrupted_one(tmp_path):
    method = methods.get("der").make(model=MODEL, input_fn=STREAM.input_fn, buffer_size=8)
    config = train.RunConfig(seeds=(0, 1), checkpoint_every_s=float("inf"), **CONFIG)
    full = train.run(method, STREAM, config)
    assert full["settings"] == ["general"] and full["tasks_done"] == 1
    batches = STREAM.stream_batches(4)  # Mammoth's, short at a pair's end
    assert batches.sum() == len(STREAM.stream(0, 4)[0]) and batches.min() < 4
    assert full["timing"]["steps"] == len(batches)  # one pass over the stream
    partial = train.run(method, STREAM, config, workdir=tmp_path, stop_after=(0, 1))
    assert partial["tasks_done"] == 0
    other = dataclasses.replace(
        STREAM, stream=lambda seed, b: tuple(a[::-1] for a in STREAM.stream(seed, b))
    )
    with pytest.raises(CheckpointError, match="stream"):  # another stream: not this run
        train.run(method, other, config, workdir=tmp_path, resume=True)
    resumed = train.run(method, STREAM, config, workdir=tmp_path, resume=True)
    assert resumed["accuracy"] == full["accuracy"]
    for a, b in zip(jax.tree.leaves(resumed["state"]), jax.tree.leaves(full["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the buffer holds stream items as the stream rotated them
    items, angles = STREAM.stream(0, 4)
    x_tr = STREAM.train(0)[0]
    seen = np.asarray(streams.rotate(jnp.asarray(x_tr[items]), jnp.asarray(angles)))
    stored = np.asarray(full["state"].buffer.data["x"][0])
    assert all((seen == s).all((1, 2)).any() for s in stored)
    assert not all((x_tr[items] == s).all((1, 2)).any() for s in stored)


def test_fuzzy_boundaries_are_van_de_vens_ramps():
    """3 tasks of 8 iterations, ramps of 2 each side (by hand from `_probs_per_context`)."""
    probs = streams.fuzzy_probs(3, 8, 2)
    up = np.array([0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(probs[0, :6], [1, 1, *up[::-1]])
    np.testing.assert_allclose(probs[0, 18:], [*up, 1, 1])
    np.testing.assert_allclose(probs[1, 2:14], [*up, 1, 1, 1, 1, *up[::-1]])
    np.testing.assert_allclose(probs[2, 10:22], [*up, 1, 1, 1, 1, *up[::-1]])
    np.testing.assert_allclose(probs.sum(0), 1.0)
    with pytest.raises(ValueError, match="at most half"):
        streams.fuzzy_probs(3, 8, 5)


def test_a_fuzzy_stream_uses_each_tasks_items_once_before_repeating():
    from tests.conftest import tiny_scenario

    sc = tiny_scenario(num_tasks=3)
    stream = streams.fuzzy(sc, fuzziness=1)
    assert stream.settings == ("general",) and stream.num_tasks == 1
    items, angles = stream.stream(0, 4)
    assert angles is None and len(items) == 3 * round(np.mean(sc.train_sizes) / 4) * 4
    _, y = stream.train(0)
    for t in range(3):  # a task's items are each used once before any is used again
        mine = items[np.isin(y[items], sc.classes(t))]
        n = sc.train_sizes[t]
        first = mine[:n]
        assert len(set(first.tolist())) == len(first)
    # 6 iterations a task: task 0 holds iterations 0-1 and 16-17 alone (its period wraps
    # round), task 1 iterations 4-7, task 2 10-13
    task_of = lambda i: y[items[4 * i : 4 * i + 4]] // 2  # noqa: E731  (2 classes a task)
    for its, t in (((0, 1, 16, 17), 0), ((4, 5, 6, 7), 1), ((10, 11, 12, 13), 2)):
        assert all((task_of(i) == t).all() for i in its)


def test_cli_runs_a_fuzzy_stream_with_accuracy_over_time(tmp_path):
    from cljax import cli

    out = tmp_path / "run"
    args = ["--method", "er", "--benchmark", "seq-digits", "--stream", "fuzzy", "--seeds", "2"]
    args += ["--buffer-size", "50", "--set", "n_epochs=1", "--eval-every", "40"]
    assert cli.main([*args, "--workdir", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["benchmark"] == "seq-digits-fuzzy" and res["settings"] == ["general"]
    over = res["accuracy_over_time"]
    steps = res["timing"]["steps"]
    assert over["steps"][-1] == steps and len(over["steps"]) == len(over["accuracy"]) >= 3
    final = [seed[0][0] for seed in res["accuracy"]["general"]]  # (seeds, 1, 1)
    np.testing.assert_allclose(over["accuracy"][-1], final, rtol=1e-6)
    assert (out / "accuracy_over_time.png").stat().st_size > 0
