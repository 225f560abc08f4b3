"""One task's training as compiled chunks: the host loop around the compiled chunk.

The task's steps are cut into a few equal chunks so that a progress bar can
move and a long task can be checkpointed mid-way; every chunk runs the same
compiled program (padding steps at the end are skipped by a `lax.cond` whose
predicate is shared by all seeds, so it stays a real branch under `vmap`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from cljax.run import sharding
from cljax.run.compiled import Diverged, Timer, compile_once


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


@dataclasses.dataclass
class TaskContext:
    """What training one task needs besides the state and the task's arrays.

    `after_chunk(t, c, state)` (host code) measures after chunk c; `on_chunk(partial,
    state)` is called after each chunk but the last, and stops the task when it returns True.
    """

    runner: Callable
    mesh: Any
    keys: Any  # the seeds' keys of this task's steps
    seeds: tuple  # padded to a multiple of the seed devices with copies of the first ones
    config: Any  # train.RunConfig
    timer: Timer
    cache: dict = dataclasses.field(default_factory=dict)  # compiled runners by signature
    store: Any = None  # a `program_store.ProgramStore` the compiled runners are kept in, or None
    plan: Any = None  # the run's `RunPlan`: schedules and chunks
    feed: Any = None  # the run's `Feed`: the task's arrays as the compiled chunk takes them
    after_chunk: Callable | None = None
    on_chunk: Callable | None = None
    # `(t, c, step, {metric: per-seed means})` after each chunk (a logger's), or None
    log_chunk: Callable | None = None
    method_name: str = ""
    keep: int | None = None  # the real seeds, `seeds[:keep]` (default: all)
    # seeds whose loss or parameters went non-finite: {seed: {"task", "step"}} (first time)
    nonfinite: dict = dataclasses.field(default_factory=dict)


def _plan(ctx: TaskContext, t: int, n: int, done: Partial | None, pool: int = 0):
    """`(idx, valid, sizes, length, chunks, steps, done)`: task t's plan (`RunPlan.task`)
    over its `n` items and `pool` items of the method's pool, checked against a stop."""
    task = ctx.plan.task(t, n, pool)
    done = done or Partial(t, -1, task.length, task.steps)
    task.check_resume(done.length, done.steps, done.chunk)
    return task.idx, task.valid, task.sizes, task.length, task.chunks, task.steps, done


def _bar(config, steps: int, initial: int, desc: str):
    # disable=None: tqdm draws only on a terminal, so a log file gets the per-task lines alone;
    # one bar for a multi-host job.
    return tqdm(
        total=steps,
        initial=initial,
        desc=desc,
        disable=True if not config.progress or jax.process_index() != 0 else None,
        leave=False,
        unit="step",
    )


def train_task(
    ctx: TaskContext,
    state,
    x,
    y,
    t: int,
    desc: str,
    done: Partial | None = None,
    tid=None,
    pool: int = 0,
):
    """Task t's steps in compiled chunks.

    `done` (a `Partial` of a run stopped mid-task) starts after its chunks, with
    their losses and measurements. `tid`: each item's task, with the plan's maps (default t).
    `pool`: how many valid items the method's `train_pool` adds to the task's.
    Returns `(state, mean loss of the last tenth of the steps, [after_chunk's values])`,
    or `(state, None, partial)` when stopped.
    """
    idx, valid, sizes, length, chunks, steps, done = _plan(ctx, t, len(y), done, pool)
    if sharding.seeds_size(ctx.mesh) > 1:  # as the compiled chunk takes them, every task
        state, ctx.keys = sharding.place_seeds((state, ctx.keys), ctx.mesh)
    if tid is None:
        tid = np.full(len(y), t, np.int32)
    x, y, view = ctx.feed.place(x, y, tid, ctx.mesh)
    first = sharding.replicate((idx[:, :length], np.int32(0), valid[:length]), ctx.mesh)
    compiled = compile_once(
        ctx.runner, ctx.timer, ctx.cache, state, ctx.keys, x, y, view, *first, store=ctx.store
    )
    bar = _bar(ctx.config, steps, int(valid[: (done.chunk + 1) * length].sum()), desc)
    losses, measured = list(done.losses), list(done.measured)
    for c in range(done.chunk + 1, chunks):
        sl = slice(c * length, (c + 1) * length)
        start, compiling = time.perf_counter(), ctx.timer.totals["compile_s"]
        state, metrics = _run_chunk(
            ctx, compiled, state, (x, y, view), idx, valid, sizes, c, length, t
        )
        compiling = ctx.timer.totals["compile_s"] - compiling  # a short step's first compile
        ctx.timer.add("train_s", time.perf_counter() - start - compiling)
        ok = valid[sl]
        losses.append(metrics["loss"][: ctx.keep, ok])
        bar.update(int(ok.sum()))
        bar.set_postfix({k: f"{v[:, ok].mean():.3f}" for k, v in metrics.items()})
        if ctx.log_chunk is not None and ok.any():
            step = ctx.timer.totals["steps"] + int(valid[: sl.stop].sum())
            means = {k: v[: ctx.keep, ok].mean(1).tolist() for k, v in metrics.items()}
            ctx.log_chunk(t, c, step, means)
        if ctx.after_chunk is not None:
            measured.append(list(ctx.after_chunk(t, c, state))[: ctx.keep])
        if ctx.on_chunk is not None and c < chunks - 1:
            partial = Partial(t, c, length, steps, losses, measured)
            if ctx.on_chunk(partial, state):
                bar.close()
                return state, None, partial
    bar.close()
    ctx.timer.add("steps", steps)
    return state, float(np.concatenate(losses, 1)[:, -max(1, steps // 10) :].mean()), measured


def _run_chunk(ctx: TaskContext, compiled, state, data, idx, valid, sizes, c: int, length, t):
    """Chunk c of the task: `(state, metrics)`, metrics `(seeds, length)` numpy arrays.

    Its full steps run in the compiled scan; a step that takes fewer items (an epoch's
    short last batch, `sizes`) runs as a scan of one step over only its items (compiled
    once per size), so the chunk's scan runs in segments around it, each skipping the
    steps outside it."""
    lo, hi = c * length, (c + 1) * length
    rows = np.arange(lo, hi)
    short = [int(i) for i in rows if valid[i] and sizes[i] < idx.shape[2]]
    out, start = {}, lo
    for stop in [*short, hi]:
        segment = valid[lo:hi] & (rows >= start) & (rows < stop)
        if segment.any():
            args = sharding.replicate((idx[:, lo:hi], np.int32(lo), segment), ctx.mesh)
            state, metrics, health = compiled(state, ctx.keys, *data, *args)
            metrics, health = jax.tree.map(np.asarray, (metrics, health))  # blocks: done
            check_finite(ctx, health, t, lo)
            for k, v in metrics.items():
                out.setdefault(k, np.zeros((v.shape[0], hi - lo), v.dtype))[:, segment] = v[
                    :, segment
                ]
        if stop < hi:
            one = (idx[:, stop : stop + 1, : sizes[stop]], np.int32(stop), np.ones(1, bool))
            one = sharding.replicate(one, ctx.mesh)
            step = compile_once(
                ctx.runner, ctx.timer, ctx.cache, state, ctx.keys, *data, *one, store=ctx.store
            )
            state, metrics, health = step(state, ctx.keys, *data, *one)
            metrics, health = jax.tree.map(np.asarray, (metrics, health))
            check_finite(ctx, health, t, stop)
            for k, v in metrics.items():
                out.setdefault(k, np.zeros((v.shape[0], hi - lo), v.dtype))[:, stop - lo] = v[:, 0]
        start = stop + 1
    return state, out


def check_finite(ctx: TaskContext, health: dict, t: int, step0: int) -> None:
    """Records the seeds that went non-finite in this chunk; with `on_nonfinite="stop"`
    raises `Diverged` (before the chunk's state is checkpointed)."""
    bad = {}
    for i, seed in enumerate(ctx.seeds[: ctx.keep]):
        first, finite = int(health["first_bad_step"][i]), bool(health["state_finite"][i])
        if (first >= 0 or not finite) and seed not in ctx.nonfinite:
            step = step0 + first if first >= 0 else step0
            bad[seed] = {"task": t, "step": step, "loss_finite": first < 0}
    if not bad:
        return
    ctx.nonfinite.update(bad)
    if ctx.config.on_nonfinite == "stop":
        where = ", ".join(f"seed {s} at step {b['step'] + 1}" for s, b in bad.items())
        raise Diverged(
            f"{ctx.method_name} diverged in task {t + 1} (non-finite loss or parameters: "
            f"{where}); the last good checkpoint is kept and no results are written; lower the "
            "learning rate, or pass --on-nonfinite continue to finish and record the seeds"
        )
