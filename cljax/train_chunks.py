"""One task's training as compiled chunks: the batch schedule, the scanned runner, the loop.

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
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec
from tqdm.auto import tqdm

from cljax import sharding
from cljax.methods import Method
from cljax.scenarios import apply_maps
from cljax.streams import rotate


def health(state, metrics, valid):
    """Per seed: the chunk's first step (index into it) with a non-finite metric, or -1, and
    whether every float leaf of the state is finite at the chunk's end."""
    bad = jnp.zeros(jax.tree.leaves(metrics)[0].shape, bool)
    for m in jax.tree.leaves(metrics):
        bad = bad | ~jnp.isfinite(m)
    bad = bad & valid[None]
    first = jnp.where(bad.any(1), jnp.argmax(bad, 1), -1).astype(jnp.int32)
    ok = jnp.ones(bad.shape[0], bool)
    for leaf in jax.tree.leaves(state):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            ok = ok & jnp.isfinite(leaf).reshape(leaf.shape[0], -1).all(1)
    return {"first_bad_step": first, "state_finite": ok}


def make_task_runner(method: Method, mesh=None):
    """`run(state, keys, x, y, view, idx, step0, valid) -> (state, metrics, health)` over one
    chunk, all seeds (`health`: see `health`; checked inside the compiled chunk, so divergence
    costs no host sync per step).

    `view` is None (every seed sees `x`), `(src, keep, tid)`: each seed's pixel maps
    `(S, T, P)` and each item's task `(N,)`, through which the seed sees its batches
    (`scenarios.apply_maps`: perm/rot-mnist's transforms drawn per seed), or a stream's
    `{"items": (S, L), "angles": (S, L)}` (angles optional): `idx` then holds stream
    positions, each seed's item and rotation at each position (`cljax.streams`). A negative
    index `-j - 1` in `idx` is item j of the valid items of `method.train_pool` (as stored:
    no maps applied).
    With a `mesh`, each step's batch is split over its `data` axis.
    """

    def per_seed(state, key, idx, x, y, view, step0, valid):
        pool = None
        if method.does("train_pool"):  # fixed during the task: read once per chunk
            px, py, pvalid = method.train_pool(state, x[:1])
            slots = jnp.argsort(~pvalid, stable=True)  # the valid slots first, in slot order
            pool = (px[slots], py[slots])

        def step(state, i, batch_idx):
            if isinstance(view, dict):  # a stream: batch_idx are positions in it
                item = view["items"][batch_idx]
                xb, yb = x[item], y[item]
                if "angles" in view:
                    xb = rotate(xb, view["angles"][batch_idx])
            else:
                item = jnp.maximum(batch_idx, 0)  # negative: the pool's item -idx - 1
                xb, yb = x[item], y[item]
                if view is not None:
                    src, keep, tid = view
                    xb = apply_maps(xb, src[tid[item]], keep[tid[item]])
            if pool is not None:
                from_pool = batch_idx < 0
                j = jnp.maximum(-batch_idx - 1, 0)
                pick = from_pool.reshape((-1,) + (1,) * (xb.ndim - 1))
                xb = jnp.where(pick, pool[0][j].astype(xb.dtype), xb)
                yb = jnp.where(from_pool, pool[1][j].astype(yb.dtype), yb)
            batch = sharding.shard_batch({"x": xb, "y": yb}, mesh)
            return method.train_step(state, batch, jax.random.fold_in(key, i))

        def body(state, inp):
            i, batch_idx, ok = inp
            shapes = jax.eval_shape(step, state, i, batch_idx)[1]
            zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
            return jax.lax.cond(ok, lambda s: step(s, i, batch_idx), lambda s: (s, zeros), state)

        steps = step0 + jnp.arange(idx.shape[0])
        return jax.lax.scan(body, state, (steps, idx, valid))

    def view_axes(view):  # which of the view's arrays have a seed axis
        if isinstance(view, dict):
            return {k: 0 for k in view}
        return None if view is None else (0, 0, None)

    def run(state, keys, x, y, view, idx, step0, valid):
        in_axes = (0, 0, 0, None, None, view_axes(view), None, None)
        state, metrics = jax.vmap(per_seed, in_axes=in_axes)(
            state, keys, idx, x, y, view, step0, valid
        )
        return state, metrics, health(state, metrics, valid)

    if sharding.seeds_size(mesh) == 1:
        return jax.jit(run, donate_argnums=(0,))

    def run_split(state, keys, x, y, view, idx, step0, valid):
        # each seed device runs `run` on its own seeds: no communication (a vmapped program
        # partitioned by XLA instead gathers every seed's scores for top_k, the buffer draw)
        split, whole = PartitionSpec(sharding.SEEDS), PartitionSpec()
        specs = jax.tree.map(
            lambda a: whole if a is None else split, view_axes(view), is_leaf=lambda a: a is None
        )
        fn = jax.shard_map(
            run,
            mesh=mesh,
            in_specs=(split, split, whole, whole, specs, split, whole, whole),
            out_specs=split,
            axis_names={sharding.SEEDS},
            check_vma=False,
        )
        return fn(state, keys, x, y, view, idx, step0, valid)

    return jax.jit(run_split, donate_argnums=(0,))


class Diverged(RuntimeError):
    """A seed's loss or parameters became non-finite (NaN or inf) during a task."""


class Timer:
    """Accumulates named wall-clock durations."""

    def __init__(self, **start):
        self.totals = {"compile_s": 0.0, "train_s": 0.0, "eval_s": 0.0, "steps": 0, **start}

    def add(self, name, seconds):
        self.totals[name] += seconds


def compile_once(fn, timer: Timer, cache: dict, *args):
    """AOT-compiles `fn` for `args` once per distinct argument signature, timing the compile."""
    leaves, structure = jax.tree.flatten(args)
    signature = (structure, tuple((a.shape, str(a.dtype)) for a in leaves))
    if signature not in cache:
        start = time.perf_counter()
        cache[signature] = fn.lower(*args).compile()
        timer.add("compile_s", time.perf_counter() - start)
    return cache[signature]


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
    plan: Any = None  # the run's `RunPlan`: schedules, padding, the maps or the stream
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


def _padded(pad_to: int, *arrays):
    """The task's arrays padded to `pad_to` items (one shape for every task: one compile)."""
    n = len(arrays[0])
    if pad_to <= n:
        return arrays
    return tuple(np.concatenate([a, np.zeros((pad_to - n, *a.shape[1:]), a.dtype)]) for a in arrays)


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
    view, plan = None, ctx.plan
    if plan.stream is not None:
        x, y, view = sharding.replicate((x, y, plan.stream), ctx.mesh)
    elif plan.maps is not None:
        tid = np.full(len(y), t, np.int32) if tid is None else tid
        x, y, tid = _padded(plan.pad_to, x, y, tid)
        x, y, view = sharding.replicate((x, y, (*plan.maps, tid)), ctx.mesh)
    else:
        x, y = sharding.replicate(_padded(plan.pad_to, x, y), ctx.mesh)
    first = sharding.replicate((idx[:, :length], np.int32(0), valid[:length]), ctx.mesh)
    compiled = compile_once(ctx.runner, ctx.timer, ctx.cache, state, ctx.keys, x, y, view, *first)
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
            step = compile_once(ctx.runner, ctx.timer, ctx.cache, state, ctx.keys, *data, *one)
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
