"""Evaluation after each task: every seen task's test set, all seeds, one compiled call.

The test sets are padded to one size and stacked `(T, N, ...)`, so one program
serves every row of the accuracy matrix; tasks not yet seen are skipped by a
`lax.cond` on a flag shared by all seeds. Class-IL masks the logits of classes
not yet seen, task-IL those outside the task (domain-IL keeps all classes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from cljax import sharding
from cljax.methods import Method
from cljax.scenarios import Scenario


def make_evaluator(method: Method, eval_batch: int, mesh=None):
    """`evaluate(state, x, y, valid, active, seen, task_masks) -> (cil, til)` correct counts (T, S)."""

    def evaluate(state, x, y, valid, active, seen, task_masks):
        def one_task(args):
            xt, yt, vt, mask, act = args

            def run(_):
                def body(_, batch):
                    xb, yb, vb = sharding.shard_batch(batch, mesh)
                    logits = jax.vmap(method.predict, in_axes=(0, None))(state, xb)
                    cil = jnp.argmax(jnp.where(seen, logits, -jnp.inf), -1) == yb
                    til = jnp.argmax(jnp.where(mask, logits, -jnp.inf), -1) == yb
                    return None, ((cil * vb).sum(-1), (til * vb).sum(-1))

                shape = (-1, eval_batch)
                batches = (
                    xt.reshape(shape + xt.shape[1:]),
                    yt.reshape(shape),
                    vt.reshape(shape),
                )
                _, (cil, til) = jax.lax.scan(body, None, batches)
                return cil.sum(0), til.sum(0)

            zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(run, None))
            return jax.lax.cond(act, run, lambda _: zeros, None)

        return jax.lax.map(one_task, (x, y, valid, task_masks, active))

    return jax.jit(evaluate)


def stack_tests(scenario: Scenario, eval_batch: int, mesh):
    """`((x, y, valid) on the mesh, class masks (T, C), test counts (T,), eval batch)`."""
    tests = [scenario.test(t) for t in range(scenario.num_tasks)]
    n_max = max(len(y) for _, y in tests)
    eval_batch = math.ceil(min(eval_batch, n_max) / mesh.size) * mesh.size
    n_pad = math.ceil(n_max / eval_batch) * eval_batch
    x0 = tests[0][0]
    x = np.zeros((scenario.num_tasks, n_pad, *x0.shape[1:]), x0.dtype)
    y = np.zeros((scenario.num_tasks, n_pad), np.int32)
    valid = np.zeros((scenario.num_tasks, n_pad), np.float32)
    for t, (xt, yt) in enumerate(tests):
        x[t, : len(yt)], y[t, : len(yt)], valid[t, : len(yt)] = xt, yt, 1.0
    masks = np.zeros((scenario.num_tasks, scenario.num_classes), bool)
    for t in range(scenario.num_tasks):
        masks[t, list(scenario.classes(t))] = True
    counts = valid.sum(1)
    return sharding.replicate((x, y, valid), mesh), masks, counts, eval_batch
