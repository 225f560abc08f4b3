"""The driver: one compiled program per task, seeds as a `vmap` axis.

For each task the training arrays are moved to the device once; the batch
schedule (a shuffle per epoch and seed) is a small index array, and batches
are gathered by index inside a `lax.scan` over steps. The task's steps are cut
into a few equal chunks so that a progress bar can move; the chunks run the
same compiled program (padding steps at the end are skipped by a `lax.cond`
whose predicate is shared by all seeds, so it stays a real branch under
`vmap`). After each task every seen task's test set is evaluated in one
compiled call, the accuracy matrices are updated and an orbax checkpoint is
written; a task that runs long also writes one after a chunk every
`checkpoint_every_s` seconds. `resume=True` continues from the last one and
gives the same result as an uninterrupted run (every random choice is derived
from the seed, the task index and the step).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from cljax import checkpoint as ckpt_lib
from cljax import evaluation, plots, report, sharding
from cljax.methods import Method, TaskInfo
from cljax.scenarios import Scenario

log = logging.getLogger(__name__)


def log_tasks() -> None:
    """Prints the driver's line per task (accuracy so far, time) on stderr.

    The scripts under `experiments/` call it, so that a run whose output goes
    to a log file, where no progress bar is drawn, still shows how far it is.
    Only the `cljax` loggers are set; other libraries' logging is left alone.
    The lines do not go on to the root logger: a library that configures it
    (a module-level `logging.warning` does) would print each line twice.
    """
    logger = logging.getLogger("cljax")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How to train: epochs and batch size per task, seeds, progress and evaluation sizes."""

    epochs: int = 1
    batch_size: int = 10
    seeds: tuple[int, ...] = (0,)
    chunks_per_task: int = 20
    eval_batch: int = 1000
    progress: bool = True
    devices: int | None = None  # data-parallel over this many devices (default: all)
    steps: int | None = None  # optimizer steps per task; overrides `epochs` when set
    first_epochs: int | None = None  # the first task's epochs when it differs (the DER paper's B50)
    # with a workdir, also checkpoint mid-task: after the first chunk that ends this long after
    # the last checkpoint (a run stopped mid-task then loses at most about this much work)
    checkpoint_every_s: float = 600.0
    # "sequential": each task's data in turn; "joint": once, after the last task, on the union
    # of every task's training data (the upper bound of the tables)
    protocol: str = "sequential"

    def epochs_of(self, task: int) -> int:
        """Epochs of task `task`: `first_epochs` for the first one when set, else `epochs`."""
        return self.first_epochs if task == 0 and self.first_epochs else self.epochs


class Timer:
    """Accumulates named wall-clock durations."""

    def __init__(self, **start):
        self.totals = {"compile_s": 0.0, "train_s": 0.0, "eval_s": 0.0, "steps": 0, **start}

    def add(self, name, seconds):
        self.totals[name] += seconds


def schedule(seed: int, task: int, n: int, epochs: int, batch: int, steps=None) -> np.ndarray:
    """Batch indices `(steps, batch)` of one seed on one task: a fresh shuffle per epoch.

    The last batch of an epoch is filled up with the first items of the same
    shuffle, so every step has `batch` items (at most batch-1 repeats an epoch).
    With `steps`, exactly that many steps are taken (as many epochs as needed).
    """
    per_epoch = math.ceil(n / batch)
    if steps is not None:
        epochs = math.ceil(steps / per_epoch)
    rows = []
    for epoch in range(epochs):
        perm = np.random.default_rng([seed, task, epoch]).permutation(n)
        perm = np.concatenate([perm, np.resize(perm, per_epoch * batch - n)])
        rows.append(perm.reshape(per_epoch, batch))
    return np.concatenate(rows)[:steps].astype(np.int32)


def make_task_runner(method: Method, mesh=None):
    """`run(state, keys, x, y, idx, step0, valid) -> (state, losses)` over one chunk, all seeds.

    With a `mesh`, each step's batch is split over its `data` axis.
    """

    def per_seed(state, key, idx, x, y, step0, valid):
        def step(state, i, batch_idx):
            batch = sharding.shard_batch({"x": x[batch_idx], "y": y[batch_idx]}, mesh)
            return method.train_step(state, batch, jax.random.fold_in(key, i))

        def body(state, inp):
            i, batch_idx, ok = inp
            shapes = jax.eval_shape(step, state, i, batch_idx)[1]
            zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
            return jax.lax.cond(ok, lambda s: step(s, i, batch_idx), lambda s: (s, zeros), state)

        steps = step0 + jnp.arange(idx.shape[0])
        return jax.lax.scan(body, state, (steps, idx, valid))

    def run(state, keys, x, y, idx, step0, valid):
        return jax.vmap(per_seed, in_axes=(0, 0, 0, None, None, None, None))(
            state, keys, idx, x, y, step0, valid
        )

    return jax.jit(run, donate_argnums=(0,))


def _compile(fn, timer, cache, *args):
    """AOT-compiles `fn` for `args` once per distinct argument signature, timing the compile."""
    leaves, structure = jax.tree.flatten(args)
    signature = (structure, tuple((a.shape, str(a.dtype)) for a in leaves))
    if signature not in cache:
        start = time.perf_counter()
        cache[signature] = fn.lower(*args).compile()
        timer.add("compile_s", time.perf_counter() - start)
    return cache[signature]


def _chunk_length(config: RunConfig, max_items: int) -> int:
    """Steps per compiled chunk: the same for every task of a run, so one compile serves all."""
    epochs = max(config.epochs, config.epochs_of(0))
    steps = config.steps or epochs * math.ceil(max_items / config.batch_size)
    return math.ceil(steps / max(1, min(config.chunks_per_task, steps)))


def _write_samples(method: Method, state, keys, path: Path, title: str):
    """A PNG grid of the first seed's generated samples."""
    first = jax.tree.map(lambda a: a[0], (state, keys))
    images, labels = jax.jit(method.host.sample)(*first)
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.sample_grid(
        np.asarray(images), None if labels is None else np.asarray(labels), title, path
    )


def task_info(scenario: Scenario, config: RunConfig, t: int) -> TaskInfo:
    """The static facts of task `t` that `begin_task` and `end_task` receive."""
    seen = tuple(c for j in range(t + 1) for c in scenario.classes(j))
    per_epoch = math.ceil(scenario.train_sizes[t] / config.batch_size)
    steps = config.steps or config.epochs_of(t) * per_epoch
    return TaskInfo(t, tuple(scenario.classes(t)), seen, per_epoch, steps)


def _per_seed(fn, state, *args):
    """Host-side `fn(one seed's state, *args)` over the seed axis of `state`."""
    n = jax.tree.leaves(state)[0].shape[0]
    return [fn(jax.tree.map(lambda a, i=i: a[i], state), *args) for i in range(n)]


def _training_data(protocol: str, scenario: Scenario, t: int):
    """The arrays to train on at task t; `(None, None)` where joint waits for the last task."""
    if protocol != "joint":
        return scenario.train(t)
    if t < scenario.num_tasks - 1:
        return None, None
    parts = [scenario.train(j) for j in range(scenario.num_tasks)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@dataclasses.dataclass
class Partial:
    """How far a task got when a run stopped mid-task: after `chunk` (-1: none yet) of chunks
    of `length` steps (`steps` in the task), with those chunks' losses and measurements."""

    task: int
    chunk: int
    length: int
    steps: int
    losses: list = dataclasses.field(default_factory=list)  # per chunk: (seeds, steps) array
    measured: list = dataclasses.field(default_factory=list)  # per chunk: after_chunk's values

    def to_json(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "losses": [np.asarray(a).tolist() for a in self.losses],
        }

    @classmethod
    def from_json(cls, d: dict) -> Partial:
        losses = [np.asarray(a, np.float32) for a in d["losses"]]
        return cls(**{**d, "losses": losses})


def _train_task(
    runner,
    cache,
    mesh,
    state,
    keys,
    x,
    y,
    seeds,
    t,
    config,
    timer,
    desc,
    pad_to=0,
    after_chunk=None,
    done=None,
    on_chunk=None,
):
    """Task t's steps in compiled chunks; `after_chunk(c, state)` (host code) after chunk c.

    `done` (a `Partial` of a run stopped mid-task) starts after its chunks, with
    their losses and measurements. `on_chunk(partial, state)` is called after
    each chunk but the last; when it returns True the task stops there.
    Returns `(state, mean loss of the last tenth of the steps, [after_chunk's
    values])`, or `(state, None, partial)` when stopped.
    """
    n = len(y)
    idx = np.stack(
        [schedule(s, t, n, config.epochs_of(t), config.batch_size, config.steps) for s in seeds]
    )
    steps = idx.shape[1]
    length = _chunk_length(config, max(n, pad_to))
    chunks = math.ceil(steps / length)
    done = done or Partial(t, -1, length, steps)
    if (done.length, done.steps) != (length, steps):
        raise ckpt_lib.CheckpointError(
            f"the checkpoint stopped task {t + 1} after chunk {done.chunk + 1} of "
            f"{done.length} steps ({done.steps} in the task), but this run cuts it into chunks "
            f"of {length} ({steps} in the task); resume with the settings it was made with"
        )
    pad = chunks * length - steps
    idx = np.concatenate([idx, np.zeros((len(seeds), pad, config.batch_size), np.int32)], 1)
    valid = np.arange(chunks * length) < steps
    if pad_to > n:  # one shape for every task: one compile per run
        x = np.concatenate([x, np.zeros((pad_to - n, *x.shape[1:]), x.dtype)])
        y = np.concatenate([y, np.zeros(pad_to - n, y.dtype)])
    x, y = sharding.replicate((x, y), mesh)
    first = sharding.replicate((idx[:, :length], np.int32(0), valid[:length]), mesh)
    compiled = _compile(runner, timer, cache, state, keys, x, y, *first)
    bar = tqdm(
        total=steps,
        initial=int(valid[: (done.chunk + 1) * length].sum()),
        desc=desc,
        # None: tqdm draws only on a terminal, so a log file gets the per-task lines alone;
        # one bar for a multi-host job.
        disable=True if not config.progress or jax.process_index() != 0 else None,
        leave=False,
        unit="step",
    )
    losses, measured = list(done.losses), list(done.measured)
    for c in range(done.chunk + 1, chunks):
        sl = slice(c * length, (c + 1) * length)
        start = time.perf_counter()
        chunk = sharding.replicate((idx[:, sl], np.int32(c * length), valid[sl]), mesh)
        state, metrics = compiled(state, keys, x, y, *chunk)
        metrics = jax.tree.map(np.asarray, metrics)  # blocks: the chunk is done
        timer.add("train_s", time.perf_counter() - start)
        ok = valid[sl]
        losses.append(metrics["loss"][:, ok])
        bar.update(int(ok.sum()))
        bar.set_postfix({k: f"{v[:, ok].mean():.3f}" for k, v in metrics.items()})
        if after_chunk is not None:
            measured.append(list(after_chunk(c, state)))
        if on_chunk is not None and c < chunks - 1:
            partial = Partial(t, c, length, steps, losses, measured)
            if on_chunk(partial, state):
                bar.close()
                return state, None, partial
    bar.close()
    timer.add("steps", steps)
    return state, float(np.concatenate(losses, 1)[:, -max(1, steps // 10) :].mean()), measured


def run(
    method: Method,
    scenario: Scenario,
    config: RunConfig,
    workdir: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    after_task: Callable[[int, Any], list] | None = None,
    after_chunk: Callable[[int, int, Any], list] | None = None,
) -> dict:
    """Trains `method` on every task of `scenario` for every seed; returns the results dict.

    With `workdir`, a checkpoint is written after every task, and mid-task
    after a chunk every `config.checkpoint_every_s`; `resume=True` continues
    from the latest one. `stop_after=t` returns after task t (as if
    interrupted), `stop_after=(t, c)` after chunk c (not the last) of task t,
    its checkpoint written, which is how resuming is tested. Methods with `resize`
    (data-dependent shapes) run their seeds one after another, each in
    `WORKDIR/seed-S`; the others run all seeds at once under `vmap`.
    `after_task(t, state)` (host code, optional) is called after task t's
    evaluation with the seed-stacked state and returns one JSON value per seed
    in it; the values land in `results["after_task"][t][seed]` (an extra
    measurement, such as the quality of a generator's samples; checkpointed with
    the task, so a resumed run keeps those of the tasks before the stop).
    `after_chunk(t, c, state)` likewise after each of the `chunks_per_task`
    compiled chunks of task t's training (the state mid-task, before
    `end_task`): `results["after_chunk"][t][c][seed]` (model selection within
    a task, as the DGM authors' code does every 5 epochs).
    """
    seeds = tuple(config.seeds)
    if method.host.resize is None or len(seeds) == 1:
        raw = _run_seeds(
            method, scenario, config, workdir, resume, stop_after, after_task, after_chunk
        )
    else:
        parts = []
        for seed in seeds:
            sub = None if workdir is None else Path(workdir) / f"seed-{seed}"
            one = dataclasses.replace(config, seeds=(seed,))
            parts.append(
                _run_seeds(method, scenario, one, sub, resume, stop_after, after_task, after_chunk)
            )
        raw = {
            "acc": {k: np.concatenate([p["acc"][k] for p in parts]) for k in parts[0]["acc"]},
            "timing": {k: sum(p["timing"][k] for p in parts) for k in parts[0]["timing"]},
            "losses": np.mean([p["losses"] for p in parts], 0).tolist(),
            "per_task": [sum(r, []) for r in zip(*(p["per_task"] for p in parts), strict=True)],
            "after_task": [sum(r, []) for r in zip(*(p["after_task"] for p in parts), strict=True)],
            "after_chunk": [
                None if None in task else [sum(c, []) for c in zip(*task, strict=True)]
                for task in zip(*(p["after_chunk"] for p in parts), strict=True)
            ],
            "state": [p["state"] for p in parts],  # one state per seed: shapes may differ
            "devices": parts[0]["devices"],
        }
    out = report.results(
        method, scenario, config, raw["acc"], raw["timing"], raw["losses"], state=raw["state"]
    )
    out["devices"] = raw["devices"]
    if raw["per_task"]:
        out["per_task"] = raw["per_task"]  # [task][seed] -> the method's `describe`
    if after_task is not None:
        out["after_task"] = raw["after_task"]
    if after_chunk is not None:
        out["after_chunk"] = raw["after_chunk"]
    return out


def _run_seeds(
    method, scenario, config, workdir, resume, stop_after, after_task=None, after_chunk=None
) -> dict:
    wall = time.perf_counter()
    seeds = tuple(config.seeds)
    T = scenario.num_tasks
    mesh = sharding.make_mesh(config.devices)
    if config.batch_size % mesh.size:
        raise ValueError(
            f"batch size {config.batch_size} cannot be split over {mesh.size} devices; "
            f"choose a multiple of {mesh.size} or fewer devices"
        )
    seed_keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(seed_keys)
    example_x, _ = scenario.train(0)
    state = jax.jit(jax.vmap(method.init, in_axes=(0, None)))(init_keys, example_x[:1])
    state, seed_keys = sharding.replicate((state, seed_keys), mesh)

    def keys_for(t, purpose):  # purpose 1: train steps and end_task, 2: begin_task
        return jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, purpose), t))(seed_keys)

    def begin(state, t):
        info = task_info(scenario, config, t)
        fn = jax.vmap(lambda s, k: method.begin_task(s, info, k))
        return fn(state, keys_for(t, 2))

    (x_test, y_test, v_test), masks, counts, eval_batch = evaluation.stack_tests(
        scenario, config.eval_batch, mesh
    )
    evaluate = evaluation.make_evaluator(method, eval_batch, mesh)
    runner = make_task_runner(method, mesh)
    compiled_cache = {}
    acc = {"class-il": np.full((len(seeds), T, T), np.nan), "task-il": None}
    acc["task-il"] = acc["class-il"].copy()
    timer = Timer()
    losses, per_task = [], []
    extra = [[None] * len(seeds) for _ in range(T)]
    chunk_extra = [None] * T  # [task][chunk][seed] where after_chunk measured it
    first_task, partial = 0, None

    manager = ckpt_lib.manager(workdir) if workdir is not None else None
    identity = {
        "method": method.name,
        "benchmark": scenario.name,
        "num_tasks": T,
        "seeds": list(seeds),
        "hparams": method.hparams,
        "epochs": config.epochs,
        **({"first_epochs": config.first_epochs} if config.first_epochs else {}),
        "batch_size": config.batch_size,
    }
    if resume and manager is not None and manager.latest_step() is not None:

        def structure_of(meta):  # the state's tree structure at the checkpoint
            shaped = jax.eval_shape(lambda s: s, state)
            begun = meta["partial"]["task"] if "partial" in meta else meta["task"]
            for j in range(begun + 1):
                shaped = jax.eval_shape(functools.partial(begin, t=j), shaped)
            return shaped

        replicated = NamedSharding(mesh, PartitionSpec())
        state, acc, saved = ckpt_lib.restore(manager, structure_of, acc, identity, replicated)
        first_task = saved["task"] + 1
        if "partial" in saved:  # stopped mid-task: begin_task done, some chunks trained
            partial = Partial.from_json(saved["partial"])
            first_task = partial.task
        timer.totals.update(saved["timing"])
        losses, per_task = saved["losses"], saved.get("per_task", [])
        # measurements of the tasks before the stop (checkpoints written before they were kept
        # have none: None there)
        for t, values in enumerate(saved.get("after_task") or []):
            extra[t] = values
        for t, values in enumerate(saved.get("after_chunk") or []):
            chunk_extra[t] = values
        wall -= saved["timing"].get("total_s", 0.0)

    def meta_of(t):  # what a checkpoint during or after task t records besides state and acc
        timer.totals["total_s"] = time.perf_counter() - wall
        return {
            "task": t,
            "timing": timer.totals,
            "losses": losses,
            "per_task": per_task,
            "after_task": extra[: t + 1],
            "after_chunk": chunk_extra[: t + 1],
            "run": identity,
        }

    last_save = time.perf_counter()

    def on_chunk(done, state):  # mid-task: checkpoint when due; True stops the run here
        nonlocal last_save
        stop = stop_after == (done.task, done.chunk)
        due = time.perf_counter() - last_save >= config.checkpoint_every_s
        if manager is not None and jax.process_count() > 1:  # orbax saves with every host
            due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))  # host 0's clock
        if manager is not None and (stop or due):
            meta = {**meta_of(done.task - 1), "partial": done.to_json()}
            ckpt_lib.save(manager, ckpt_lib.step_of(done.task, done.chunk), state, acc, meta)
            last_save = time.perf_counter()
        return stop

    for t in range(first_task, T):
        info = task_info(scenario, config, t)
        resumed_mid_task = partial is not None and partial.task == t
        if method.begin_task is not None and not resumed_mid_task:
            state = jax.jit(begin, static_argnums=1)(state, t)
        task_keys = keys_for(t, 1)
        x, y = _training_data(config.protocol, scenario, t)
        if x is not None:
            state, loss, measured = _train_task(
                runner,
                compiled_cache,
                mesh,
                state,
                task_keys,
                x,
                y,
                seeds,
                t,
                config,
                timer,
                desc=f"{method.name} {scenario.name} task {t + 1}/{T}",
                pad_to=0 if config.protocol == "joint" else max(scenario.train_sizes),
                after_chunk=None if after_chunk is None else functools.partial(after_chunk, t),
                done=partial if resumed_mid_task else None,
                on_chunk=on_chunk,
            )
            if loss is None:  # stopped mid-task
                break
            losses.append(loss)
            if after_chunk is not None:
                chunk_extra[t] = measured
            if method.end_task is not None:
                end = jax.vmap(functools.partial(method.end_task, task=info), (0, None, 0))
                state = jax.jit(end)(state, (jnp.asarray(x), jnp.asarray(y)), task_keys)
            if method.host.resize is not None:
                resized = _per_seed(method.host.resize, state, info)
                state = jax.tree.map(lambda *a: np.stack(a), *resized)
                state = sharding.replicate(state, mesh)
        if method.host.describe is not None:
            per_task.append(_per_seed(method.host.describe, state))

        start = time.perf_counter()
        seen = masks[: t + 1].any(0)
        active = np.arange(T) <= t
        cil, til = evaluate(state, x_test, y_test, v_test, active, seen, masks)
        cil, til = np.asarray(cil), np.asarray(til)  # blocks: eval_s includes the wait
        timer.add("eval_s", time.perf_counter() - start)
        acc["class-il"][:, t, : t + 1] = evaluation.percent_seen(cil, counts, t)
        acc["task-il"][:, t, : t + 1] = evaluation.percent_seen(til, counts, t)
        if jax.process_index() == 0:  # one host speaks for a multi-host job, as with the bar
            log.info(
                "%s %s task %d/%d, seeds %s: class-IL %.2f, task-IL %.2f (mean over tasks seen), %.0f s",
                method.name,
                scenario.name,
                t + 1,
                T,
                list(seeds),
                acc["class-il"][:, t, : t + 1].mean(),
                acc["task-il"][:, t, : t + 1].mean(),
                time.perf_counter() - wall,
            )

        if after_task is not None:
            extra[t] = list(after_task(t, state))
        if method.host.sample is not None and workdir is not None and jax.process_index() == 0:
            _write_samples(
                method,
                state,
                task_keys,
                Path(workdir) / "samples" / f"task{t + 1}.png",
                f"{method.name} samples after task {t + 1}/{T}",
            )

        if manager is not None:
            ckpt_lib.save(manager, ckpt_lib.step_of(t), state, acc, meta_of(t))
            last_save = time.perf_counter()
        if isinstance(stop_after, int) and t >= stop_after:
            break

    if manager is not None:
        manager.wait_until_finished()
    timer.totals["total_s"] = time.perf_counter() - wall
    return {
        "acc": acc,
        "timing": timer.totals,
        "losses": losses,
        "per_task": per_task,
        "after_task": extra,
        "after_chunk": chunk_extra,
        "state": state,
        "devices": mesh.size,
    }
