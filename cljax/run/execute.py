"""One vmapped run of a set of seeds: the per-task loop (begin_task, the task's compiled
chunks, end_task, scoring, checkpoint), executing a `RunPlan` with its `Feed`, its
`Checkpoints` and its `Evaluator` as collaborators; the outcome is a `RunOutput`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from cljax.run import checkpoint_io as ckpt_lib
from cljax.run import costs, lr_schedule, program_store, sharding
from cljax.run.checkpointing import Checkpoints
from cljax.run.chunks import Partial, TaskContext, train_task
from cljax.run.compiled import Timer, make_task_runner
from cljax.run.evaluate import Evaluator
from cljax.run.feed import feed_for
from cljax.run.plan import RunPlan, plan_run

log = logging.getLogger("cljax.train")

# where the seeds' keys of task t are folded from (`SeedsRun.keys_for`)
KEYS_STEPS, KEYS_BEGIN, KEYS_BEGIN_DATA = 1, 2, 3


class Interrupted(Exception):
    """The run stopped on request (`Hooks.stop_requested`), its checkpoint written."""


def mesh_of(plan: RunPlan):
    """The run's `(seeds, data)` mesh of the plan's shape."""
    seed_devices, data = plan.mesh_shape
    return sharding.make_mesh(seed_devices * data, seed_devices)


def _is_key(a) -> bool:
    return jax.dtypes.issubdtype(getattr(a, "dtype", np.float32), jax.dtypes.prng_key)


def _per_seed(fn, state, *args):
    """Host-side `fn(one seed's state, *args)` over the seed axis of `state`."""
    n = jax.tree.leaves(state)[0].shape[0]
    return [fn(jax.tree.map(lambda a, i=i: a[i], state), *args) for i in range(n)]


@dataclasses.dataclass
class RunOutput:
    """What one `SeedsRun` produced: `report.results`'s arguments and the final state."""

    config: Any  # the RunConfig as run (protocol and last batch resolved)
    state: Any  # the real seeds' final state
    acc: dict  # {"class-il", "task-il"}: (seeds, T, T) percent
    timing: dict
    losses: list
    per_task: list  # [task][seed] of the method's host.describe
    after_task: list  # [task][seed]
    after_chunk: list  # [task][chunk][seed] where measured
    nonfinite: dict  # seed -> where it went non-finite
    devices: int
    seed_devices: int
    settings: tuple  # the settings scored (`RunPlan.settings`)

    def results_args(self) -> dict:
        """The keyword arguments of `report.results` after method, scenario and config."""
        return {
            "acc": self.acc,
            "timing": self.timing,
            "losses": self.losses,
            "per_task": self.per_task,
            "after_task": self.after_task,
            "after_chunk": self.after_chunk,
            "settings": self.settings,
        }


class SeedsRun:
    """One run of `config.seeds` under `vmap`: set-up, resume, the per-task loop, evaluation
    and checkpoints. `run()` returns a `RunOutput`."""

    def __init__(self, method, scenario, config, workdir, hooks):
        self.plan = plan_run(method, scenario, config, len(jax.devices()))
        self.feed = feed_for(self.plan)
        self.mesh = mesh_of(self.plan)
        # the seeds, padded to a multiple of the seed devices with copies of the first ones:
        # trained alongside, never reported or checkpointed (`self.n` are the real ones)
        self.n, self.seeds = self.plan.n_real, self.plan.seeds
        self.method, self.scenario, self.config = method, scenario, self.plan.config
        self.hooks = hooks
        self.ckpts = Checkpoints(None if workdir is None else Path(workdir))
        T = scenario.num_tasks
        self.acc = {s: np.full((self.n, T, T), np.nan) for s in ("class-il", "task-il")}
        self.timer = Timer()
        self.losses, self.per_task = [], []
        self.extra = [[None] * self.n for _ in range(T)]  # after_task: [task][seed]
        self.chunk_extra = [None] * T  # [task][chunk][seed] where after_chunk measured it
        self.nonfinite = {}  # seed -> {"task", "step", "loss_finite"} (on_nonfinite="continue")

    # -- set-up ------------------------------------------------------------------------------

    def _init_state(self):
        seed_keys = jax.vmap(jax.random.key)(jnp.asarray(self.seeds, jnp.uint32))
        init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(seed_keys)
        example_x, _ = self.scenario.train(0)
        init = jax.jit(jax.vmap(self.schedule(self.method.init), in_axes=(0, None)))
        state = init(init_keys, example_x[:1])
        state, self.seed_keys = sharding.place_seeds((state, seed_keys), self.mesh)
        return state

    def schedule(self, fn):
        """`fn` whose state gets the run's learning-rate schedule (`lr_schedule.attach`)."""
        cfg = self.config
        return lambda *a: lr_schedule.attach(fn(*a), cfg.lr_milestones, cfg.lr_gamma)

    def real(self, tree):
        """The real seeds' part of a seed-stacked tree (the padding copies cut off)."""
        if len(self.seeds) == self.n:
            return tree
        return jax.tree.map(lambda a: a[: self.n], tree)

    def padded(self, tree):
        """A tree of the real seeds with the padding copies of the first ones added back,
        placed on the mesh."""
        if len(self.seeds) > self.n:
            rows = np.resize(np.arange(self.n), len(self.seeds))
            tree = jax.tree.map(lambda a: np.asarray(a)[rows] if not _is_key(a) else a[rows], tree)
        return sharding.place_seeds(tree, self.mesh)

    def keys_for(self, t, purpose):
        """The seeds' keys of task t for `purpose`: KEYS_STEPS (train steps and end_task),
        KEYS_BEGIN (begin_task) or KEYS_BEGIN_DATA (begin_task_data)."""
        fold = lambda k: jax.random.fold_in(jax.random.fold_in(k, purpose), t)
        return jax.vmap(fold)(self.seed_keys)

    def begin(self, state, t):
        info = self.plan.task_info(t)
        fn = jax.vmap(lambda s, k: self.method.begin_task(s, info, k))
        return fn(state, self.keys_for(t, KEYS_BEGIN))

    def identity(self) -> dict:
        """What a checkpoint must have been made with to be resumed by this run (as JSON)."""
        cfg = self.config
        identity = {
            "method": self.method.name,
            "benchmark": self.scenario.name,
            "num_tasks": self.scenario.num_tasks,
            "seeds": list(self.seeds[: self.n]),
            "hparams": self.method.hparams,
            "epochs": cfg.epochs,
            **({"first_epochs": cfg.first_epochs} if cfg.first_epochs else {}),
            "batch_size": cfg.batch_size,
            "last_batch": cfg.last_batch,
            **cfg.lr_schedule(),
        }
        if self.plan.stream is not None:  # the stream itself (another --fuzziness: another run)
            digest = hashlib.sha256()
            for name in sorted(self.plan.stream):
                digest.update(np.ascontiguousarray(self.plan.stream[name]).tobytes())
            identity["stream"] = digest.hexdigest()[:16]
        return json.loads(json.dumps(identity))  # tuples as the saved JSON has them: lists

    # -- resume ------------------------------------------------------------------------------

    def _restore(self, state):
        """`(state, first task, partial)` from the latest checkpoint."""

        def structure_of(meta):  # the state's tree structure at the checkpoint
            shaped = jax.eval_shape(lambda s: s, state)
            begun = meta["partial"]["task"] if "partial" in meta else meta["task"]
            if self.method.does("begin_task"):
                for j in range(begun + 1):
                    shaped = jax.eval_shape(functools.partial(self.begin, t=j), shaped)
            return jax.eval_shape(self.real, shaped)  # saved without the padding seeds

        state, self.acc, saved = self.ckpts.restore(
            structure_of, self.acc, self.identity(), self.mesh
        )
        state = self.padded(state)
        first_task, partial = saved["task"] + 1, None
        if "partial" in saved:  # stopped mid-task: begin_task done, some chunks trained
            partial = Partial.from_json(saved["partial"])
            first_task = partial.task
        self.timer.totals.update(saved["timing"])
        self.losses, self.per_task = saved["losses"], saved.get("per_task", [])
        # measurements of the tasks before the stop (checkpoints written before they were kept
        # have none: None there)
        for t, values in enumerate(saved.get("after_task") or []):
            self.extra[t] = values
        for t, values in enumerate(saved.get("after_chunk") or []):
            self.chunk_extra[t] = values
        self.nonfinite.update({int(s): v for s, v in saved.get("nonfinite", {}).items()})
        self.wall -= saved["timing"].get("total_s", 0.0)
        return state, first_task, partial

    # -- checkpoints -------------------------------------------------------------------------

    def meta_of(self, t):
        """What a checkpoint during or after task t records besides state and acc."""
        self.timer.totals["total_s"] = time.perf_counter() - self.wall
        return {
            "task": t,
            "timing": self.timer.totals,
            "losses": self.losses,
            "per_task": self.per_task,
            "after_task": self.extra[: t + 1],
            "after_chunk": self.chunk_extra[: t + 1],
            "nonfinite": {str(s): v for s, v in self.nonfinite.items()},
            "run": self.identity(),
        }

    def save(self, state, t, partial: Partial | None = None):
        """Starts the checkpoint after task t (or mid-task, `partial`)."""
        if partial is None:
            step, meta, what = ckpt_lib.step_of(t), self.meta_of(t), f"task {t + 1}"
        else:
            meta = {**self.meta_of(t - 1), "partial": partial.to_json()}
            step = ckpt_lib.step_of(partial.task, partial.chunk)
            what = f"task {partial.task + 1} (mid-task)"
        start = time.perf_counter()
        self.ckpts.save(step, what, self.real(state), self.acc, meta)
        self.timer.add("checkpoint_s", time.perf_counter() - start)

    def on_chunk(self, stop_after, done: Partial, state) -> bool:
        """Mid-task: checkpoint when due; True stops the run here."""
        stop = stop_after == (done.task, done.chunk)
        requested = self.stop_requested()
        due = self.ckpts.due(self.config.checkpoint_every_s, requested)
        if self.ckpts.enabled and (stop or due):
            self.save(state, done.task, done)
        if requested:
            self.ckpts.finish()
            raise Interrupted(f"stopped in task {done.task + 1} after chunk {done.chunk + 1}")
        return stop

    def logs(self) -> bool:
        """Whether this process tells a logger (host 0 of a multi-host job, as the bar)."""
        return self.hooks.logger is not None and jax.process_index() == 0

    def stop_requested(self) -> bool:
        """Whether a stop was asked for (on every host, as host 0 saw it)."""
        asked = self.hooks.stop_requested is not None and self.hooks.stop_requested()
        if jax.process_count() > 1:
            asked = bool(multihost_utils.broadcast_one_to_all(np.asarray(asked)))
        return asked

    # -- the loop ----------------------------------------------------------------------------

    def tasks(self, ctx, state, first_task, partial, evaluator, stop_after):
        """Trains, scores and checkpoints tasks `first_task`, ...; the last state."""
        for t in range(first_task, self.scenario.num_tasks):
            resumed = partial if partial is not None and partial.task == t else None
            state, stopped = self.task(ctx, state, t, resumed)
            if stopped:
                break
            self.score(evaluator, state, t)
            self.after(state, t)
            if isinstance(stop_after, int) and t >= stop_after:
                break
            if t < self.scenario.num_tasks - 1 and self.stop_requested():
                self.ckpts.finish()
                raise Interrupted(f"stopped after task {t + 1}")  # its checkpoint is written
        return state

    def context(self, stop_after) -> TaskContext:
        """What training one task needs besides the state and its arrays."""
        return TaskContext(
            runner=make_task_runner(self.method, self.feed, self.mesh),
            store=program_store.open_store(self.config.program_key),
            mesh=self.mesh,
            keys=None,
            seeds=self.seeds,
            keep=self.n,
            config=self.config,
            timer=self.timer,
            plan=self.plan,
            feed=self.feed,
            after_chunk=self.hooks.after_chunk,
            log_chunk=self.hooks.logger.chunk if self.logs() else None,
            on_chunk=functools.partial(self.on_chunk, stop_after),
            method_name=self.method.name,
            nonfinite=self.nonfinite,
        )

    def run(self, resume: bool, stop_after) -> RunOutput:
        """Trains every task (from the latest checkpoint with `resume`); the outcome."""
        self.wall = time.perf_counter()
        compiles = costs.snapshot()
        state = self._init_state()
        first_task, partial = 0, None
        if resume and self.ckpts.latest() is not None:
            state, first_task, partial = self._restore(state)
        evaluator = Evaluator(
            self.method, self.feed, self.config.eval_batch, self.mesh, self.config.class_il
        )
        ctx = self.context(stop_after)
        self.ckpts.last_save = time.perf_counter()
        try:
            state = self.tasks(ctx, state, first_task, partial, evaluator, stop_after)
        except BaseException:  # divergence, an interrupt: the checkpoint begun is completed
            with contextlib.suppress(Exception):
                self.ckpts.finish()
            raise
        start = time.perf_counter()
        self.ckpts.finish()
        self.timer.add("checkpoint_s", time.perf_counter() - start)
        for name, seconds in costs.since(compiles).items():  # this process's part of the run
            self.timer.add(name, seconds)
        self.timer.totals["total_s"] = time.perf_counter() - self.wall
        return RunOutput(
            config=self.config,
            state=self.real(state),
            acc=self.acc,
            timing=self.timer.totals,
            losses=self.losses,
            per_task=self.per_task,
            after_task=self.extra,
            after_chunk=self.chunk_extra,
            nonfinite=self.nonfinite,
            devices=self.mesh.size,
            seed_devices=sharding.seeds_size(self.mesh),
            settings=self.plan.settings,
        )

    def task(self, ctx: TaskContext, state, t: int, resumed: Partial | None):
        """begin_task, the task's chunks, end_task, resize: `(state, stopped mid-task)`."""
        method, info = self.method, self.plan.task_info(t)
        if method.does("begin_task") and resumed is None:
            state = jax.jit(self.begin, static_argnums=1)(state, t)
        ctx.keys = self.keys_for(t, KEYS_STEPS)
        x, y, tid = self.feed.training_data(t)
        if method.does("begin_task_data") and resumed is None and x is not None:
            keys = self.keys_for(t, KEYS_BEGIN_DATA)
            state = self.on_data(method.begin_task_data, state, info, x, y, tid, keys)
        if x is not None:
            desc = f"{method.name} {self.scenario.name} task {t + 1}/{self.scenario.num_tasks}"
            pool = self.pool_size(state, t)
            if self.config.lr_milestones and resumed is None:  # the scheduler afresh
                state = jax.jit(jax.vmap(self.schedule(lambda s: s)))(state)
                per_epoch = -(-(self.scenario.train_sizes[t] + pool) // self.config.batch_size)
                state = sharding.place_seeds(lr_schedule.begin(state, per_epoch), self.mesh)
            state, loss, measured = train_task(ctx, state, x, y, t, desc, resumed, tid, pool)
            if loss is None:  # stopped mid-task
                return state, True
            self.losses.append(loss)
            if self.hooks.after_chunk is not None:
                self.chunk_extra[t] = measured
            if method.does("end_task"):
                state = self.on_data(method.end_task, state, info, x, y, tid, ctx.keys)
            if method.host.resize is not None:
                resized = _per_seed(method.host.resize, state, info)
                state = jax.tree.map(lambda *a: np.stack(a), *resized)
                state = sharding.place_seeds(state, self.mesh)
        if method.host.describe is not None:
            self.per_task.append(_per_seed(method.host.describe, self.real(state)))
        return state, False

    def pool_size(self, state, t: int) -> int:
        """How many items the method's `train_pool` adds to task t's (the same for every seed:
        one schedule serves them all)."""
        if not self.method.does("train_pool"):
            return 0
        example_x = self.scenario.train(0)[0][:1]
        valid = jax.vmap(lambda s: self.method.train_pool(s, example_x)[2])(state)
        counts = np.asarray(valid).sum(1)
        if (counts != counts[0]).any():
            raise ValueError(
                f"{self.method.name}: the seeds hold {sorted(set(counts.tolist()))} items to add "
                f"to task {t + 1}'s data; a vmapped run needs one count (run the seeds one by one)"
            )
        return int(counts[0])

    def on_data(self, fn, state, info, x, y, tid, keys):
        """`fn(state, info, (x, y), key)` (`end_task`, `begin_task_data`) of every seed on the
        task's data, as the feed shows it to each seed."""

        def bound(s, data, k):
            return fn(s, info, data, k)

        return self.feed.on_data(bound, state, x, y, tid, keys)

    def score(self, evaluator, state, t: int):
        """Task t's row of both accuracy matrices, told to the logger and the log."""
        start = time.perf_counter()
        cil, til = evaluator.row(state, t)
        self.timer.add("eval_s", time.perf_counter() - start)
        n = self.n  # the padding seeds' rows dropped
        self.acc["class-il"][:, t, : t + 1] = cil[:n]
        self.acc["task-il"][:, t, : t + 1] = til[:n]
        if jax.process_index() != 0:  # one host speaks for a multi-host job, as with the bar
            return
        shown = self.shown()
        if self.logs():
            self.hooks.logger.task(
                t, {key: self.acc[s][:, t, : t + 1].tolist() for s, _, key in shown}
            )
        accs = ", ".join(f"{name} {self.acc[s][:, t, : t + 1].mean():.2f}" for s, name, _ in shown)
        log.info(
            "%s %s task %d/%d, %s: %s (mean over tasks seen), %.0f s",
            self.method.name,
            self.scenario.name,
            t + 1,
            self.scenario.num_tasks,
            self.models(),
            accs,
            time.perf_counter() - self.wall,
        )

    def models(self) -> str:
        """What the log lines call the models trained: the seeds."""
        return f"seeds {list(self.seeds[: self.n])}"

    def shown(self):
        """`(matrix, name shown, name logged)` of each setting the run scores."""
        single = self.scenario.single_setting
        if single is not None:  # one head: one number, in the class-IL matrix
            return [("class-il", single, single)]
        names = {"class-il": "class-IL", "task-il": "task-IL"}
        return [(s, names[s], s) for s in self.plan.settings]

    def after(self, state, t: int):
        """The measurements and callbacks after task t, then its checkpoint."""
        if self.hooks.after_task is not None:
            self.extra[t] = list(self.hooks.after_task(t, state))[: self.n]
        if self.hooks.on_task is not None and jax.process_index() == 0:
            self.hooks.on_task(t, state, self.keys_for(t, KEYS_STEPS))
        if self.ckpts.enabled:
            self.save(state, t)
