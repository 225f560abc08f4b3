"""Where a run's data comes from: the one place that tells the three kinds of scenario apart.

A `Feed` gives the driver each task's training arrays, the compiled step its batches
(gathered by index inside the scan), the boundary functions their view of a task's data,
and the evaluator its test sets and view:

- `SharedFeed`: every seed sees the same arrays (class- and task-incremental benchmarks);
- `MapsFeed`: each seed sees the untransformed images through its own pixel maps, drawn
  per seed (perm-/rot-mnist as the DER paper runs them);
- `StreamFeed`: one task, a stream of item positions (and rotations) per seed (MNIST-360,
  fuzzy task boundaries).

`feed_for(plan)` picks one. Nothing outside this module checks which kind a scenario is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cljax.benchmarks.scenario import apply_maps
from cljax.benchmarks.streams import rotate
from cljax.run import sharding
from cljax.run.plan import RunPlan


def _padded(pad_to: int, *arrays):
    """The task's arrays padded to `pad_to` items (one shape for every task: one compile)."""
    n = len(arrays[0])
    if pad_to <= n:
        return arrays
    return tuple(np.concatenate([a, np.zeros((pad_to - n, *a.shape[1:]), a.dtype)]) for a in arrays)


class SharedFeed:
    """Every seed sees the scenario's arrays as they are."""

    def __init__(self, plan: RunPlan):
        self.plan, self.scenario = plan, plan.scenario

    def task_data(self, j: int):
        """Task j's training `(x, y)` as the feed stores them."""
        return self.scenario.train(j)

    def training_data(self, t: int):
        """`(x, y, tid)`: the arrays to train on at task t and each item's task; `(None, None,
        None)` where the joint protocol waits for the last task."""
        if not self.plan.joint:
            x, y = self.task_data(t)
            return x, y, np.full(len(y), t, np.int32)
        if not self.plan.trains_at(t):
            return None, None, None
        parts = [self.task_data(j) for j in range(self.scenario.num_tasks)]
        tid = np.concatenate([np.full(len(p[1]), j, np.int32) for j, p in enumerate(parts)])
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), tid

    def place(self, x, y, tid, mesh):
        """`(x, y, view)` on the mesh as the compiled chunk takes them (padded to one size)."""
        del tid
        x, y = sharding.replicate(_padded(self.plan.pad_to, x, y), mesh)
        return x, y, None

    @staticmethod
    def view_axes(view):
        """Which of the view's arrays have a seed axis (`vmap`'s in_axes)."""
        del view
        return None

    @staticmethod
    def gather(x, y, view, batch_idx):
        """One step's `(xb, yb)` inside the compiled chunk (a negative index: the pool's)."""
        del view
        item = jnp.maximum(batch_idx, 0)  # negative: the pool's item -idx - 1
        return x[item], y[item]

    def on_data(self, fn, state, x, y, tid, keys):
        """`fn(state, (x, y), key)` of every seed on a task's data, jitted and vmapped."""
        del tid
        return jax.jit(jax.vmap(fn, (0, None, 0)))(state, (jnp.asarray(x), jnp.asarray(y)), keys)

    def test_sets(self):
        """Each task's test `(x, y)`."""
        return [self.scenario.test(t) for t in range(self.scenario.num_tasks)]

    def eval_view(self, mesh):
        """What the evaluator sees the test sets through (None: as they are)."""
        del mesh
        return None


class MapsFeed(SharedFeed):
    """Each seed sees the untransformed images through its own maps of the item's task."""

    def task_data(self, j: int):
        return self.scenario.raw("train")

    def place(self, x, y, tid, mesh):
        x, y, tid = _padded(self.plan.pad_to, x, y, tid)
        return sharding.replicate((x, y, (*self.plan.maps, tid)), mesh)

    @staticmethod
    def view_axes(view):
        return (0, 0, None)

    @staticmethod
    def gather(x, y, view, batch_idx):
        item = jnp.maximum(batch_idx, 0)  # negative: the pool's item -idx - 1
        src, keep, tid = view
        return apply_maps(x[item], src[tid[item]], keep[tid[item]]), y[item]

    def on_data(self, fn, state, x, y, tid, keys):
        x, y = jnp.asarray(x), jnp.asarray(y)
        one = int(tid[0]) if (tid == tid[0]).all() else None  # one task: one map for all

        def through_maps(s, k, src, keep):
            src, keep = (src[one], keep[one]) if one is not None else (src[tid], keep[tid])
            return fn(s, (apply_maps(x, src, keep), y), k)

        return jax.jit(jax.vmap(through_maps))(state, keys, *self.plan.maps)

    def test_sets(self):
        return [self.scenario.raw("test")] * self.scenario.num_tasks

    def eval_view(self, mesh):
        return sharding.replicate(self.plan.maps, mesh)


class StreamFeed(SharedFeed):
    """One task: each seed's stream of item positions (and rotations) over the arrays."""

    def place(self, x, y, tid, mesh):
        del tid
        return sharding.replicate((x, y, self.plan.stream), mesh)

    @staticmethod
    def view_axes(view):
        return {k: 0 for k in view}

    @staticmethod
    def gather(x, y, view, batch_idx):
        item = view["items"][batch_idx]  # batch_idx: positions in the stream
        xb, yb = x[item], y[item]
        if "angles" in view:
            xb = rotate(xb, view["angles"][batch_idx])
        return xb, yb


def feed_for(plan: RunPlan) -> SharedFeed:
    """The feed of the plan's scenario."""
    if plan.stream is not None:
        return StreamFeed(plan)
    if plan.maps is not None:
        return MapsFeed(plan)
    return SharedFeed(plan)
