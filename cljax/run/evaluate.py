"""Evaluation after each task: every seen task's test set, all seeds, one compiled call.

The test sets are padded to one size and stacked `(T, N, ...)`, so one program
serves every row of the accuracy matrix; tasks not yet seen are skipped by a
`lax.cond` on a flag shared by all seeds. Class-IL takes the argmax over every
output, as Mammoth (`class_il="all"`, 5dc82be `utils/training.py:53-57`), or over the
classes seen so far (`"seen"`); task-IL over the task's classes (domain-IL keeps all).
The two class-IL protocols agree after the last task; before it, "seen" scores a
method higher whose unseen classes' logits are never trained down (LwF most).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cljax.benchmarks.scenario import Scenario, apply_maps
from cljax.methods import Method
from cljax.run import sharding


def make_evaluator(method: Method, eval_batch: int, mesh=None):
    """`evaluate(state, x, y, valid, active, seen, task_masks, view=None) -> (cil, til)` correct
    counts (T, S); `seen`: the outputs class-IL ranges over (`class_il_outputs`); `view`: each seed's pixel maps `(src, keep)`, `(S, T, P)`, through which it
    sees task t's images (`scenarios.apply_maps`), or None."""

    def evaluate(state, x, y, valid, active, seen, task_masks, view=None):
        def predict(xb, t):
            if view is None:
                return jax.vmap(method.predict, in_axes=(0, None))(state, xb)
            see = lambda s, src, keep: method.predict(s, apply_maps(xb, src, keep))  # noqa: E731
            return jax.vmap(see)(state, view[0][:, t], view[1][:, t])

        def one_task(args):
            xt, yt, vt, mask, act, t = args

            def run(_):
                def body(_, batch):
                    xb, yb, vb = sharding.shard_batch(batch, mesh)
                    logits = predict(xb, t)
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

        tasks = jnp.arange(x.shape[0])
        return jax.lax.map(one_task, (x, y, valid, task_masks, active, tasks))

    return jax.jit(evaluate)


def stack_tests(scenario: Scenario, eval_batch: int, mesh, tests=None):
    """`((x, y, valid) on the mesh, class masks (T, C), test counts (T,), eval batch)` of
    `tests` (each task's `(x, y)`; default: the scenario's test sets; a run's come from its
    `Feed.test_sets`)."""
    if tests is None:
        tests = [scenario.test(t) for t in range(scenario.num_tasks)]
    n_max = max(len(y) for _, y in tests)
    split = sharding.data_size(mesh)
    eval_batch = math.ceil(min(eval_batch, n_max) / split) * split
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


CLASS_IL = ("all", "seen")


def class_il_outputs(masks: np.ndarray, t: int, over: str) -> np.ndarray:
    """`(C,)` bool: the outputs the class-IL argmax ranges over after task `t`: every one
    (`over="all"`, the reference's) or those of the classes of tasks 0..t (`"seen"`);
    `masks` is each task's classes `(T, C)`."""
    if over not in CLASS_IL:
        raise ValueError(f"class_il must be one of {CLASS_IL}, got {over!r}")
    return masks[: t + 1].any(0) if over == "seen" else np.ones(masks.shape[1], bool)


def percent_seen(correct, counts, t: int) -> np.ndarray:
    """`(S, t + 1)` percent correct on tasks 0..t from `make_evaluator`'s `(T, S)` counts."""
    return (100.0 * np.asarray(correct) / counts[:, None]).T[:, : t + 1]


def generated_accuracy(method: Method, classify, per_class: int = 500):
    """`accuracy(state, key, classes) -> (S, len(classes))`: how often a reference classifier
    recognises a conditional generator's samples as the class they were drawn for.

    The evaluation of the MeRGAN paper (Wu et al. 2018; the authors' `--test`
    mode): `per_class` samples of each class in `classes` from each seed's
    generator (`method.host.sample`), labelled by `classify(images) -> logits`, a
    classifier trained on real data. Percent, per seed and class.
    """
    if method.host.sample is None:
        raise ValueError(f"method {method.name!r} has no generator to sample from")

    @jax.jit
    def draw(state, keys):
        return jax.vmap(lambda s, k: method.host.sample(s, k, per_class))(state, keys)

    @jax.jit
    def predict(images):
        return jax.lax.map(lambda b: jnp.argmax(classify(b), -1), images)

    def accuracy(state, key, classes):
        n_seeds = jax.tree.leaves(state)[0].shape[0]
        images, labels = draw(state, jax.random.split(key, n_seeds))
        if labels is None:
            raise ValueError(f"method {method.name!r} generates unlabelled samples")
        flat = images.reshape((-1, per_class, *images.shape[2:]))
        pred = np.asarray(predict(flat)).reshape(labels.shape)
        labels = np.asarray(labels)
        hits = [((pred == c) & (labels == c)).sum(1) / (labels == c).sum(1) for c in classes]
        return 100.0 * np.stack(hits, 1)

    return accuracy


def accuracy_probe(
    method: Method, scenario: Scenario, eval_batch: int = 1000, mesh=None, class_il: str = "all"
):
    """`after_chunk(t, c, state) -> [percent per seed]`: the class-IL accuracy on the test sets
    of tasks 0..t, mid-task (a stream's accuracy over time, `train.run`'s `after_chunk` hook),
    on test sets every seed shares (the scenario's own); `class_il` as `RunConfig`'s."""
    if scenario.seed_maps is not None:
        raise ValueError(f"{scenario.name}: accuracy over time needs test data shared by the seeds")
    mesh = mesh if mesh is not None else sharding.make_mesh(1)
    (x, y, v), masks, counts, batch = stack_tests(scenario, eval_batch, mesh)
    evaluate = make_evaluator(method, batch, mesh)

    def probe(t, c, state):
        del c
        active = np.arange(scenario.num_tasks) <= t
        cil, _ = evaluate(state, x, y, v, active, class_il_outputs(masks, t, class_il), masks)
        correct = np.asarray(cil)[: t + 1].sum(0)  # (S,)
        return (100.0 * correct / counts[: t + 1].sum()).tolist()

    return probe


class Evaluator:
    """Scores a run after each task: every seen task's test set, all seeds, one compiled call,
    the test sets and the view each seed sees them through given by the run's `Feed`."""

    def __init__(self, method: Method, feed, eval_batch: int, mesh, class_il: str = "all"):
        scenario = feed.scenario
        self.class_il = class_il
        self.tests = stack_tests(scenario, eval_batch, mesh, feed.test_sets())
        evaluate = make_evaluator(method, self.tests[3], mesh)
        view = feed.eval_view(mesh)
        self.evaluate = evaluate if view is None else functools.partial(evaluate, view=view)
        self.num_tasks = scenario.num_tasks

    def row(self, state, t: int):
        """`(class-IL, task-IL)` percent `(S, t + 1)` on tasks 0..t after task t (blocks)."""
        (x, y, v), masks, counts, _ = self.tests
        over = class_il_outputs(masks, t, self.class_il)
        active = np.arange(self.num_tasks) <= t
        cil, til = self.evaluate(state, x, y, v, active, over, masks)
        cil, til = np.asarray(cil), np.asarray(til)
        return percent_seen(cil, counts, t), percent_seen(til, counts, t)
