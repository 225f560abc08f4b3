"""The compiled chunk: one `lax.scan` over a chunk's steps, every seed under `vmap` (or split
over devices with `shard_map`), the batches gathered by index through the run's `Feed`,
the seeds' health checked inside the program; and the compile cache and timer around it.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from cljax.methods import Method
from cljax.run import lr_schedule, sharding


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


def make_task_runner(method: Method, feed, mesh=None):
    """`run(state, keys, x, y, view, idx, step0, valid) -> (state, metrics, health)` over one
    chunk, all seeds (`health`: see `health`; checked inside the compiled chunk, so divergence
    costs no host sync per step).

    `x, y, view` are what `feed.place` put on the mesh; `feed.gather(x, y, view, idx)` takes
    each step's batch (`cljax.run.feed`: shared arrays, per-seed pixel maps, a stream). A
    negative index `-j - 1` in `idx` is item j of the valid items of `method.train_pool`
    (as stored: no maps applied). With a `mesh`, each step's batch is split over its `data`
    axis.
    """

    def per_seed(state, key, idx, x, y, view, step0, valid):
        pool = None
        if method.does("train_pool"):  # fixed during the task: read once per chunk
            px, py, pvalid = method.train_pool(state, x[:1])
            slots = jnp.argsort(~pvalid, stable=True)  # the valid slots first, in slot order
            pool = (px[slots], py[slots])

        def step(state, i, batch_idx):
            xb, yb = feed.gather(x, y, view, batch_idx)
            if pool is not None:
                from_pool = batch_idx < 0
                j = jnp.maximum(-batch_idx - 1, 0)
                pick = from_pool.reshape((-1,) + (1,) * (xb.ndim - 1))
                xb = jnp.where(pick, pool[0][j].astype(xb.dtype), xb)
                yb = jnp.where(from_pool, pool[1][j].astype(yb.dtype), yb)
            batch = sharding.shard_batch({"x": xb, "y": yb}, mesh)
            state = lr_schedule.at_step(state, i)  # a no-op without a schedule
            return method.train_step(state, batch, jax.random.fold_in(key, i))

        def body(state, inp):
            i, batch_idx, ok = inp
            shapes = jax.eval_shape(step, state, i, batch_idx)[1]
            zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
            return jax.lax.cond(ok, lambda s: step(s, i, batch_idx), lambda s: (s, zeros), state)

        steps = step0 + jnp.arange(idx.shape[0])
        return jax.lax.scan(body, state, (steps, idx, valid))

    def run(state, keys, x, y, view, idx, step0, valid):
        in_axes = (0, 0, 0, None, None, feed.view_axes(view), None, None)
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
            lambda a: whole if a is None else split,
            feed.view_axes(view),
            is_leaf=lambda a: a is None,
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
        self.totals[name] = self.totals.get(name, 0.0) + seconds


def compile_once(fn, timer: Timer, cache: dict, *args, store=None):
    """AOT-compiles `fn` for `args` once per distinct argument signature, timing the compile;
    with a `store` (`cljax.run.program_store`), loaded from it when there, else stored."""
    leaves, structure = jax.tree.flatten(args)
    signature = (structure, tuple((a.shape, str(a.dtype)) for a in leaves))
    if signature not in cache:
        start = time.perf_counter()
        compiled = store.load("task", args) if store is not None else None
        if compiled is None:
            lowered = fn.lower(*args)
            compiled = lowered.compile() if store is None else store.compile("task", args, lowered)
        cache[signature] = compiled
        timer.add("compile_s", time.perf_counter() - start)
    return cache[signature]
