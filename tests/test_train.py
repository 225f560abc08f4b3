"""The driver: vmapped seeds equal separate runs; resuming equals not stopping."""

import dataclasses
import logging
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods, models, train
from cljax.benchmarks import scenarios
from cljax.outputs import report
from cljax.run import checkpoint_io as ckpt_lib
from tests.conftest import tiny_scenario

SC = tiny_scenario(num_tasks=3)


def derpp():
    return methods.get("derpp").make(
        model=models.MLP((8,), SC.num_classes),
        input_fn=SC.input_fn,
        buffer_size=10,
        minibatch_size=4,
        lr=0.05,
    )


CONFIG = dict(epochs=2, batch_size=4, progress=False, chunks_per_task=3)


@pytest.fixture(scope="module")
def method():
    return derpp()


def chunk_probe(t, c, state):
    """An `after_chunk` measurement: task, chunk and a per-seed statistic of the state."""
    first = jax.tree.leaves(state.net.params)[0]
    return [[t, c, float(np.asarray(first[i]).sum())] for i in range(first.shape[0])]


@pytest.fixture(scope="module")
def seed_runs(method):
    """`(run of seeds 0 and 1 together, run of seed 0 alone, run of seed 1 alone)`."""
    return tuple(
        train.run(method, SC, train.RunConfig(seeds=seeds, **CONFIG), after_chunk=chunk_probe)
        for seeds in ((0, 1), (0,), (1,))
    )


def test_vmapped_seeds_equal_separate_runs(seed_runs):
    both, _, one = seed_runs
    np.testing.assert_allclose(
        np.asarray(both["accuracy"]["class-il"], float)[1],
        np.asarray(one["accuracy"]["class-il"], float)[0],
    )
    leaves_both = jax.tree.leaves(both["state"].net.params)
    leaves_one = jax.tree.leaves(one["state"].net.params)
    for a, b in zip(leaves_both, leaves_one, strict=True):
        np.testing.assert_allclose(a[1], b[0], rtol=1e-5, atol=1e-6)
    assert both["timing"]["steps"] == one["timing"]["steps"] > 0
    assert both["tasks_done"] == SC.num_tasks
    # after_chunk saw every chunk of every task, with each seed's mid-task state
    chunks = both["after_chunk"]
    assert [[c[0][:2] for c in task] for task in chunks] == [
        [[t, c] for c in range(len(chunks[t]))] for t in range(SC.num_tasks)
    ]
    assert all(len(task) > 1 for task in chunks)
    for task_both, task_one in zip(chunks, one["after_chunk"], strict=True):
        for c_both, c_one in zip(task_both, task_one, strict=True):
            assert c_both[1][2] == pytest.approx(c_one[0][2], rel=1e-5)
    assert set(both["final_average_accuracy"]) == {"class-il", "task-il"}


def test_merged_seed_runs_equal_one_run(seed_runs):
    both, *parts = ({k: v for k, v in r.items() if k != "state"} for r in seed_runs)
    merged = report.merge_seeds(*parts)
    assert merged["seeds"] == [0, 1]
    for setting in ("class-il", "task-il"):
        np.testing.assert_allclose(
            np.asarray(merged["accuracy"][setting], float),
            np.asarray(both["accuracy"][setting], float),
            rtol=1e-5,
        )
        for name in ("final_average_accuracy", "forgetting", "average_incremental_accuracy"):
            for stat in ("mean", "std"):
                assert merged[name][setting][stat] == pytest.approx(
                    both[name][setting][stat], rel=1e-4, abs=1e-4
                )
        np.testing.assert_allclose(
            merged["A_n"][setting]["std"], both["A_n"][setting]["std"], atol=1e-4
        )
    assert merged["timing"]["steps"] == parts[0]["timing"]["steps"] + parts[1]["timing"]["steps"]
    np.testing.assert_allclose(
        np.asarray(merged["after_chunk"], float), np.asarray(both["after_chunk"], float), rtol=1e-5
    )
    with pytest.raises(ValueError, match="seeds overlap"):
        report.merge_seeds(parts[0], parts[0])
    other = {**parts[1], "hparams": {**parts[1]["hparams"], "lr": 1.0}}
    with pytest.raises(ValueError, match="hparams differs"):
        report.merge_seeds(parts[0], other)


class _Lines(logging.Handler):
    """The messages logged to a logger (caplog's handler sits on the root logger, which
    `train.log_tasks` cuts the `cljax` loggers off from)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_resume_equals_uninterrupted_run(method, tmp_path):
    config = train.RunConfig(seeds=(0, 1), **CONFIG)
    logger, handler = logging.getLogger("cljax.train"), _Lines()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        full = train.run(method, SC, config, after_chunk=chunk_probe)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    # a line per task, with the accuracy so far (for logs, where no bar is drawn)
    lines = handler.lines
    assert [line.split(":")[0] for line in lines] == [
        f"derpp {SC.name} task {t + 1}/{SC.num_tasks}, seeds [0, 1]" for t in range(SC.num_tasks)
    ]
    last = np.asarray(full["accuracy"]["class-il"], float)[:, -1].mean()
    assert f"class-IL {last:.2f}," in lines[-1]
    partial = train.run(method, SC, config, workdir=tmp_path, stop_after=0, after_chunk=chunk_probe)
    assert partial["tasks_done"] == 1
    resumed = train.run(method, SC, config, workdir=tmp_path, resume=True, after_chunk=chunk_probe)
    assert resumed["tasks_done"] == SC.num_tasks
    assert resumed["accuracy"] == full["accuracy"]
    # the measurements of the task before the stop come back from the checkpoint
    np.testing.assert_allclose(
        np.asarray(resumed["after_chunk"], float), np.asarray(full["after_chunk"], float), rtol=1e-5
    )
    for a, b in zip(jax.tree.leaves(resumed["state"]), jax.tree.leaves(full["state"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    assert resumed["timing"]["steps"] == full["timing"]["steps"]


def test_resume_mid_task_equals_uninterrupted_run(method, tmp_path):
    """A run stopped after a chunk of task 2 (its checkpoint written mid-task) and resumed
    trains the rest of that task and ends as the run that never stopped."""
    config = train.RunConfig(seeds=(0, 1), checkpoint_every_s=float("inf"), **CONFIG)
    full = train.run(method, SC, config, after_chunk=chunk_probe)
    partial = train.run(
        method, SC, config, workdir=tmp_path, stop_after=(1, 0), after_chunk=chunk_probe
    )
    assert partial["tasks_done"] == 1
    trained = []  # (task, chunk) the resumed run trains: task 2 from its second chunk on

    def probe(t, c, state):
        trained.append((t, c))
        return chunk_probe(t, c, state)

    resumed = train.run(method, SC, config, workdir=tmp_path, resume=True, after_chunk=probe)
    assert trained[0] == (1, 1) and trained[-1][0] == 2
    assert resumed["accuracy"] == full["accuracy"]
    assert resumed["final_train_loss"] == pytest.approx(full["final_train_loss"], rel=1e-6)
    assert resumed["timing"]["steps"] == full["timing"]["steps"]
    np.testing.assert_allclose(
        np.asarray(resumed["after_chunk"], float), np.asarray(full["after_chunk"], float), rtol=1e-5
    )
    for a, b in zip(jax.tree.leaves(resumed["state"]), jax.tree.leaves(full["state"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    # chunks of another length cannot continue that task
    train.run(method, SC, config, workdir=tmp_path / "b", stop_after=(1, 0))
    other = dataclasses.replace(config, chunks_per_task=2)
    with pytest.raises(ValueError, match="resume with the settings it was made with"):
        train.run(method, SC, other, workdir=tmp_path / "b", resume=True)


def test_resume_skips_a_damaged_newest_checkpoint(method, seed_runs, tmp_path):
    """The newest checkpoint's arrays damaged: resuming restores the one before it, says so,
    sets the damaged one aside and ends as the run that never stopped."""
    config = train.RunConfig(seeds=(0, 1), **CONFIG)
    train.run(method, SC, config, workdir=tmp_path, stop_after=1)  # checkpoints of tasks 1, 2
    newest = str(ckpt_lib.step_of(1))
    for f in (tmp_path / "checkpoints" / newest / "tree").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    resumed = train.run(method, SC, config, workdir=tmp_path, resume=True)
    assert resumed["accuracy"] == seed_runs[0]["accuracy"]
    assert (tmp_path / "damaged-checkpoints" / newest).is_dir()
    # with every checkpoint unreadable, resuming refuses and names each
    for f in (tmp_path / "checkpoints").rglob("*"):
        if f.is_file() and "meta" in f.parts:
            f.write_text("{broken")
    with pytest.raises(ckpt_lib.CheckpointError, match="no checkpoint in .* is readable"):
        train.run(method, SC, config, workdir=tmp_path, resume=True)


def test_sigterm_checkpoints_at_the_next_chunk_and_resumes(method, seed_runs, tmp_path):
    """SIGTERM during chunk 1 of task 2 (as a scheduler sends it): the run writes a mid-task
    checkpoint right after that chunk, raises `Interrupted`, and resuming ends as the run
    that never stopped."""
    config = train.RunConfig(seeds=(0, 1), checkpoint_every_s=float("inf"), **CONFIG)

    def signal_in(t, c, state):
        if (t, c) == (1, 0):
            signal.raise_signal(signal.SIGTERM)
        return chunk_probe(t, c, state)

    lines = []
    with pytest.raises(train.Interrupted), train.StopRequest(say=lines.append) as stop:
        train.run(method, SC, config, workdir=tmp_path, after_chunk=signal_in, stop_requested=stop)
    assert stop.signum == signal.SIGTERM and "SIGTERM: stopping after the current chunk" in lines[0]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert ckpt_lib.manager(tmp_path).latest_step() == ckpt_lib.step_of(1, 0)  # nothing lost
    resumed = train.run(method, SC, config, workdir=tmp_path, resume=True)
    assert resumed["accuracy"] == seed_runs[0]["accuracy"]


def test_nonfinite_loss_stops_before_its_chunk_is_checkpointed(tmp_path):
    """Task 2's images hold an inf pixel: the run stops in that task's first chunk, naming
    the seeds, with task 1's checkpoint the newest; `continue` finishes and records them."""
    x, y, xt, yt = (np.asarray(a) for a in (*SC.train(0), *SC.test(0)))
    arrays = [
        np.concatenate([a, b])
        for a, b in zip((x, y, xt, yt), (*SC.train(1), *SC.test(1)), strict=True)
    ]
    arrays[0][len(x) :, 0, 0] = 255  # task 2's training images only
    poisoned = scenarios.class_incremental(
        "poisoned", tuple(arrays), 2, lambda v, k, t: jnp.where(v == 255, jnp.inf, v / 255.0), "mlp"
    )
    m = methods.get("derpp").make(
        model=models.MLP((8,), poisoned.num_classes), input_fn=poisoned.input_fn, buffer_size=10
    )
    config = train.RunConfig(seeds=(0, 1), checkpoint_every_s=0.0, **CONFIG)
    with pytest.raises(
        train.Diverged, match=r"derpp diverged in task 2 .*seed 0 at step 1, seed 1"
    ):
        train.run(m, poisoned, config, workdir=tmp_path)
    assert ckpt_lib.manager(tmp_path).latest_step() == ckpt_lib.step_of(0)
    res = train.run(m, poisoned, dataclasses.replace(config, on_nonfinite="continue"))
    assert res["nonfinite"] == {
        str(s): {"task": 1, "step": 0, "loss_finite": False} for s in (0, 1)
    }


def test_mid_task_checkpoints_follow_the_clock(method, tmp_path):
    """`checkpoint_every_s=0` saves after every chunk but a task's last (that one is the
    end-of-task checkpoint's); the manager keeps the last two."""
    config = train.RunConfig(seeds=(0,), checkpoint_every_s=0.0, **CONFIG)
    train.run(method, SC, config, workdir=tmp_path, stop_after=(2, 1))
    manager = ckpt_lib.manager(tmp_path)
    last_two = [ckpt_lib.step_of(2, 0), ckpt_lib.step_of(2, 1)]
    assert manager.all_steps() == last_two


def test_schedule_is_a_shuffle_per_epoch():
    idx = train.schedule(seed=3, task=1, n=10, epochs=2, batch=4)
    assert idx.shape == (6, 4)
    for epoch in (idx[:3].ravel(), idx[3:].ravel()):
        assert set(epoch[:10].tolist()) == set(range(10))
    assert not np.array_equal(idx[:3], idx[3:])


def test_drop_last_takes_full_batches_of_fresh_items_only(method):
    """`last_batch="drop"` (a DataLoader with drop_last, van de Ven's protocol): each epoch
    floor(n / batch) full batches of distinct items, the rest sitting that epoch out; a run
    takes that many steps a task, every one full."""
    idx = train.schedule(seed=3, task=1, n=10, epochs=2, batch=4, drop=True)
    assert idx.shape == (4, 4)
    for epoch in (idx[:2].ravel(), idx[2:].ravel()):
        assert len(set(epoch.tolist())) == 8
    assert train.schedule(3, 1, 10, 1, 4, steps=5, drop=True).shape == (5, 4)
    with pytest.raises(ValueError, match="no full batch"):
        train.schedule(0, 0, 3, 1, 4, drop=True)
    config = {**CONFIG, "last_batch": "drop"}
    res = train.run(method, SC, train.RunConfig(seeds=(0,), **config))
    per_epoch = [n // CONFIG["batch_size"] for n in SC.train_sizes]
    assert res["timing"]["steps"] == CONFIG["epochs"] * sum(per_epoch)
    assert res["hparams"]["last_batch"] == "drop"


def test_a_larger_first_task_trains_its_own_epochs(method):
    sc = tiny_scenario(num_tasks=3, base_classes=4)  # classes (0-3), (4), (5)
    res = train.run(method, sc, train.RunConfig(seeds=(0,), first_epochs=3, **CONFIG))
    per_epoch = [-(-n // CONFIG["batch_size"]) for n in sc.train_sizes]
    assert per_epoch == [12, 3, 3]
    assert res["timing"]["steps"] == 3 * per_epoch[0] + CONFIG["epochs"] * sum(per_epoch[1:])
    assert res["benchmark"] == "tiny-b4" and res["hparams"]["first_epochs"] == 3
    assert res["tasks_done"] == 3


def test_joint_trains_once_on_everything():
    """`joint` asks for the joint protocol on the object (`needs`): `train.run` given the
    method alone trains it once on every task's data; any method can be run so."""
    joint = methods.get("joint").make(model=models.MLP((8,), SC.num_classes), input_fn=SC.input_fn)
    assert joint.needs.protocol == "joint"
    total = sum(SC.train_sizes)
    for protocol in (None, "joint"):  # the method's own, or asked for
        config = train.RunConfig(seeds=(0,), protocol=protocol, **CONFIG)
        res = train.run(joint, SC, config)
        assert res["timing"]["steps"] == CONFIG["epochs"] * -(-total // CONFIG["batch_size"])
        assert len(res["final_train_loss"]) == 1


def tiny_domain(seed_maps: bool, seed=0):
    """SC's images as a 3-task domain-IL benchmark of pixel permutations, drawn per run seed
    (`seed_maps`) or once with `seed` for every run seed."""
    x_tr, y_tr = (np.concatenate(a) for a in zip(*(SC.train(t) for t in range(3)), strict=True))
    x_te, y_te = (np.concatenate(a) for a in zip(*(SC.test(t) for t in range(3)), strict=True))
    maps = lambda s: scenarios.domain_maps("perm-mnist", s, 3, x_tr.shape[1:])  # noqa: E731
    src, keep = maps(seed)
    transforms = [
        lambda x, a=a, b=b: scenarios.apply_maps(x, a, b) for a, b in zip(src, keep, strict=True)
    ]
    raw = lambda split: (x_tr, y_tr) if split == "train" else (x_te, y_te)  # noqa: E731
    return scenarios.domain_incremental(
        "tiny-perm",
        (x_tr, y_tr, x_te, y_te),
        transforms,
        SC.input_fn,
        "mlp",
        seed_maps=maps if seed_maps else None,
        raw=raw if seed_maps else None,
    )


def test_each_vmapped_seed_sees_its_own_permutations():
    """Per-seed perm/rot data under vmap: seed 1 beside seed 0 equals seed 1 alone, which
    equals a run on the benchmark drawn once with seed 1 (the maps are those transforms)."""
    method = methods.get("er").make(
        model=models.MLP((8,), 6), input_fn=SC.input_fn, buffer_size=10, minibatch_size=4, lr=0.1
    )

    def end_task(state, task, data, key):
        """Records which pixels of the first image the seed was given (its own maps)."""
        del key, task
        x = data[0].reshape(len(data[0]), -1).astype(jnp.int32)
        mark = jnp.sum(x[0] * jnp.arange(x.shape[1]))
        return state.replace(net=state.net.replace(step=state.net.step * 0 + mark))

    method = method._replace(end_task=end_task)
    config = lambda seeds: train.RunConfig(seeds=seeds, **CONFIG)  # noqa: E731
    both = train.run(method, tiny_domain(True), config((0, 1)))
    alone = {1: train.run(method, tiny_domain(True), config((1,)))}
    fixed = train.run(method, tiny_domain(False, seed=1), config((1,)))
    acc = lambda r: np.asarray(r["accuracy"]["domain-il"], float)  # noqa: E731
    params = lambda r: jax.tree.leaves(r["state"].net.params)  # noqa: E731
    np.testing.assert_allclose(acc(both)[1], acc(alone[1])[0], atol=1e-6)
    for a, b in zip(params(both), params(alone[1]), strict=True):
        np.testing.assert_allclose(a[1], b[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acc(alone[1]), acc(fixed), atol=1e-6)
    for a, b in zip(params(alone[1]), params(fixed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(acc(both)[0], acc(both)[1])  # the seeds' data differ
    # end_task got each seed's own view of the last task's images
    step = lambda r: np.asarray(r["state"].net.step)  # noqa: E731
    assert int(step(both)[1]) == int(step(alone[1])[0])
    assert step(both)[0] != step(both)[1] and step(alone[1]) == step(fixed)


def test_an_epochs_short_last_batch_trains_on_the_items_left_alone(method):
    """Batch 5 over 24 items: each epoch is 4 batches of 5 and one of 4 (`last_batch` "short",
    Mammoth's DataLoader), the short one its own step; the run equals a hand-written loop of
    the method's step over the same batches, in chunks that start and end on short steps."""
    sc = SC
    config = train.RunConfig(seeds=(0,), **{**CONFIG, "batch_size": 5, "chunks_per_task": 3})
    res = train.run(method, sc, config)
    assert res["hparams"]["last_batch"] == "short" and res["timing"]["steps"] == 30
    seed_key = jax.random.key(0)
    x0, _ = sc.train(0)
    state = jax.jit(method.init)(jax.random.fold_in(seed_key, 0), x0[:1])
    step = jax.jit(method.train_step)
    for t in range(3):
        x, y = sc.train(t)
        key = jax.random.fold_in(jax.random.fold_in(seed_key, 1), t)
        idx = train.schedule(0, t, len(y), 2, 5)
        sizes = train.step_sizes(len(y), 2, 5)
        assert sizes.tolist() == [5, 5, 5, 5, 4] * 2
        for i, (row, size) in enumerate(zip(idx, sizes, strict=True)):
            batch = {"x": jnp.asarray(x[row[:size]]), "y": jnp.asarray(y[row[:size]])}
            state, _ = step(state, batch, jax.random.fold_in(key, i))
    # every item offered once an epoch (the old top-up offered 25 a task and epoch)
    assert int(res["state"].buffer.num_seen[0]) == int(state.buffer.num_seen) == 3 * 2 * 24
    for a, b in zip(
        jax.tree.leaves(res["state"].net.params), jax.tree.leaves(state.net.params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b), rtol=1e-5, atol=1e-6)
