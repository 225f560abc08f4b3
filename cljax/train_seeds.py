"""One vmapped run of a set of seeds: set-up, resume, the per-task loop, evaluation and
checkpoints (the part of the driver between `train.run` and `train_chunks.train_task`)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from cljax import checkpoint as ckpt_lib
from cljax import evaluation, sharding
from cljax.methods import TaskInfo
from cljax.run.plan import RunPlan, plan_run
from cljax.scenarios import Scenario, apply_maps
from cljax.train_chunks import Partial, TaskContext, Timer, make_task_runner, train_task

log = logging.getLogger("cljax.train")


class Interrupted(Exception):
    """The run stopped on request (`Hooks.stop_requested`), its checkpoint written."""


def task_info(scenario: Scenario, config, t: int) -> TaskInfo:
    """The static facts of task `t` that `begin_task` and `end_task` receive (`config`'s
    protocol and last batch as given: see `RunPlan.task_info`)."""
    return RunPlan(scenario, config, (), 0, (1, 1), (), None, None, None, 0, 0).task_info(t)


def _is_key(a) -> bool:
    return jax.dtypes.issubdtype(getattr(a, "dtype", np.float32), jax.dtypes.prng_key)


def _per_seed(fn, state, *args):
    """Host-side `fn(one seed's state, *args)` over the seed axis of `state`."""
    n = jax.tree.leaves(state)[0].shape[0]
    return [fn(jax.tree.map(lambda a, i=i: a[i], state), *args) for i in range(n)]


def training_data(protocol: str, scenario: Scenario, t: int):
    """`(x, y, tid)`: the arrays to train on at task t and each item's task; `(None, None,
    None)` where joint waits for the last task. A scenario with per-seed maps gives its
    untransformed images (each seed sees them through its maps of task `tid`)."""

    def task_data(j):
        return scenario.raw("train") if scenario.seed_maps is not None else scenario.train(j)

    if protocol != "joint":
        x, y = task_data(t)
        return x, y, np.full(len(y), t, np.int32)
    if t < scenario.num_tasks - 1:
        return None, None, None
    parts = [task_data(j) for j in range(scenario.num_tasks)]
    tid = np.concatenate([np.full(len(p[1]), j, np.int32) for j, p in enumerate(parts)])
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), tid


def mesh_of(plan: RunPlan):
    """The run's `(seeds, data)` mesh of the plan's shape."""
    seed_devices, data = plan.mesh_shape
    return sharding.make_mesh(seed_devices * data, seed_devices)


# where the seeds' keys of task t are folded from (`SeedsRun.keys_for`)
KEYS_STEPS, KEYS_BEGIN, KEYS_BEGIN_DATA = 1, 2, 3


class SeedsRun:
    """One run of `config.seeds` under `vmap`: set-up, resume, the per-task loop, evaluation and
    checkpoints. `run()` fills `raw` (the arguments of `report.results`), `state`, `devices`."""

    def __init__(self, method, scenario, config, workdir, hooks):
        self.workdir = None if workdir is None else Path(workdir)
        self.plan = plan_run(method, scenario, config, len(jax.devices()))
        self.mesh = mesh_of(self.plan)
        # the seeds, padded to a multiple of the seed devices with copies of the first ones:
        # trained alongside, never reported or checkpointed (`self.n` are the real ones)
        self.n, self.seeds = self.plan.n_real, self.plan.seeds
        config = self.plan.config
        self.method, self.scenario, self.config, self.hooks = method, scenario, config, hooks
        T = scenario.num_tasks
        self.acc = {"class-il": np.full((self.n, T, T), np.nan), "task-il": None}
        self.acc["task-il"] = self.acc["class-il"].copy()
        self.timer = Timer()
        self.losses, self.per_task = [], []
        self.extra = [[None] * self.n for _ in range(T)]  # after_task: [task][seed]
        self.chunk_extra = [None] * T  # [task][chunk][seed] where after_chunk measured it
        self.manager = ckpt_lib.manager(self.workdir) if self.workdir is not None else None
        self.writing = None  # the checkpoint orbax is writing behind training, if any
        self.maps, self.stream = self.plan.maps, self.plan.stream
        self.devices = self.mesh.size
        self.seed_devices = sharding.seeds_size(self.mesh)
        self.nonfinite = {}  # seed -> {"task", "step", "loss_finite"} (on_nonfinite="continue")

    # -- set-up ------------------------------------------------------------------------------

    def _init_state(self):
        seed_keys = jax.vmap(jax.random.key)(jnp.asarray(self.seeds, jnp.uint32))
        init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(seed_keys)
        example_x, _ = self.scenario.train(0)
        init = jax.jit(jax.vmap(self.method.init, in_axes=(0, None)))
        state = init(init_keys, example_x[:1])
        state, self.seed_keys = sharding.place_seeds((state, seed_keys), self.mesh)
        return state

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
        }
        if self.stream is not None:  # the stream itself (a changed --fuzziness is another run)
            digest = hashlib.sha256()
            for name in sorted(self.stream):
                digest.update(np.ascontiguousarray(self.stream[name]).tobytes())
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

        replicated = NamedSharding(self.mesh, PartitionSpec())
        state, self.acc, saved, skipped = ckpt_lib.restore(
            self.manager, structure_of, self.acc, self.identity(), replicated
        )
        state = self.padded(state)
        if skipped:  # damaged newer checkpoints: set aside, so their steps can be written again
            aside = self.workdir / "damaged-checkpoints"
            for step, why in skipped:
                log.warning("skipped checkpoint %d in %s: %s", step, self.manager.directory, why)
            if jax.process_index() == 0:
                ckpt_lib.set_aside(self.manager, [step for step, _ in skipped], aside)
            log.warning(
                "resuming from the newest readable checkpoint; the unreadable ones moved to %s",
                aside,
            )
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
        """Starts the checkpoint after task t (or mid-task, `partial`): the files are written
        behind the next steps (`finish_save` waits for them and names a failed write)."""
        self.finish_save()  # the one before, whose failure is its own
        if partial is None:
            step, meta = ckpt_lib.step_of(t), self.meta_of(t)
        else:
            meta = {**self.meta_of(t - 1), "partial": partial.to_json()}
            step = ckpt_lib.step_of(partial.task, partial.chunk)
        what = f"task {t + 1}" if partial is None else f"task {partial.task + 1} (mid-task)"
        try:
            ckpt_lib.save(self.manager, step, self.real(state), self.acc, meta, wait=False)
        except Exception as e:  # a full disk, a folder gone: orbax raises many types
            raise self.write_error(what, e) from e
        self.writing = what
        self.last_save = time.perf_counter()

    def finish_save(self):
        """Waits for the checkpoint being written, if any (a CheckpointWriteError if it failed)."""
        what, self.writing = self.writing, None
        if what is not None:
            try:
                self.manager.wait_until_finished()
            except Exception as e:
                raise self.write_error(what, e) from e

    def write_error(self, what: str, e: Exception) -> ckpt_lib.CheckpointWriteError:
        return ckpt_lib.CheckpointWriteError(
            f"could not write the checkpoint of {what} in {self.manager.directory} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); the earlier "
            "checkpoints are kept: free space or fix the folder, then rerun with --resume"
        )

    def on_chunk(self, stop_after, done: Partial, state) -> bool:
        """Mid-task: checkpoint when due; True stops the run here."""
        stop = stop_after == (done.task, done.chunk)
        requested = self.stop_requested()
        due = requested or time.perf_counter() - self.last_save >= self.config.checkpoint_every_s
        if self.manager is not None and jax.process_count() > 1:  # orbax saves with every host
            due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))  # host 0's clock
        if self.manager is not None and (stop or due):
            self.save(state, done.task, done)
        if requested:
            self.finish_save()
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

    def tasks(self, ctx, state, first_task, partial, evaluate, tests, stop_after):
        """Trains, scores and checkpoints tasks `first_task`, ...; the last state."""
        for t in range(first_task, self.scenario.num_tasks):
            resumed = partial if partial is not None and partial.task == t else None
            state, stopped = self.task(ctx, state, t, resumed)
            if stopped:
                break
            self.evaluate(evaluate, tests, state, t)
            self.after(state, t)
            if isinstance(stop_after, int) and t >= stop_after:
                break
            if t < self.scenario.num_tasks - 1 and self.stop_requested():
                self.finish_save()
                raise Interrupted(f"stopped after task {t + 1}")  # its checkpoint is written
        return state

    def run(self, resume: bool, stop_after) -> SeedsRun:
        self.wall = time.perf_counter()
        state = self._init_state()
        first_task, partial = 0, None
        if resume and self.manager is not None and self.manager.latest_step() is not None:
            state, first_task, partial = self._restore(state)
        tests = evaluation.stack_tests(self.scenario, self.config.eval_batch, self.mesh)
        evaluate = evaluation.make_evaluator(self.method, tests[3], self.mesh)
        if self.maps is not None:  # every seed through its own maps
            maps = sharding.replicate(self.maps, self.mesh)
            evaluate = functools.partial(evaluate, view=maps)
        ctx = TaskContext(
            runner=make_task_runner(self.method, self.mesh),
            mesh=self.mesh,
            keys=None,
            seeds=self.seeds,
            keep=self.n,
            config=self.config,
            timer=self.timer,
            plan=self.plan,
            after_chunk=self.hooks.after_chunk,
            log_chunk=self.hooks.logger.chunk if self.logs() else None,
            on_chunk=functools.partial(self.on_chunk, stop_after),
            method_name=self.method.name,
            nonfinite=self.nonfinite,
        )
        self.last_save = time.perf_counter()
        try:
            state = self.tasks(ctx, state, first_task, partial, evaluate, tests, stop_after)
        except BaseException:  # divergence, an interrupt: the checkpoint begun is completed
            with contextlib.suppress(Exception):
                self.finish_save()
            raise
        self.finish_save()
        self.timer.totals["total_s"] = time.perf_counter() - self.wall
        self.state = self.real(state)
        self.raw = {
            "acc": self.acc,
            "timing": self.timer.totals,
            "losses": self.losses,
            "per_task": self.per_task,
            "after_task": self.extra,
            "after_chunk": self.chunk_extra,
        }
        return self

    def task(self, ctx: TaskContext, state, t: int, resumed: Partial | None):
        """begin_task, the task's chunks, end_task, resize: `(state, stopped mid-task)`."""
        method, T = self.method, self.scenario.num_tasks
        info = self.plan.task_info(t)
        if method.does("begin_task") and resumed is None:
            state = jax.jit(self.begin, static_argnums=1)(state, t)
        ctx.keys = self.keys_for(t, KEYS_STEPS)
        x, y, tid = training_data(self.config.protocol, self.scenario, t)
        if method.does("begin_task_data") and resumed is None and x is not None:
            state = self.on_data(
                method.begin_task_data, state, info, x, y, tid, self.keys_for(t, KEYS_BEGIN_DATA)
            )
        if x is not None:
            desc = f"{method.name} {self.scenario.name} task {t + 1}/{T}"
            pool = self.pool_size(state, t)
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
        task's data (through each seed's maps)."""

        def bound(s, data, k):
            return fn(s, info, data, k)

        x, y = jnp.asarray(x), jnp.asarray(y)
        if self.maps is None:
            return jax.jit(jax.vmap(bound, (0, None, 0)))(state, (x, y), keys)

        one = int(tid[0]) if (tid == tid[0]).all() else None  # one task: one map for all

        def through_maps(s, k, src, keep):
            src, keep = (src[one], keep[one]) if one is not None else (src[tid], keep[tid])
            return bound(s, (apply_maps(x, src, keep), y), k)

        return jax.jit(jax.vmap(through_maps))(state, keys, *self.maps)

    def evaluate(self, evaluate, tests, state, t: int):
        """Task t's row of both accuracy matrices, and the line per task."""
        (x_test, y_test, v_test), masks, counts, _ = tests
        T = self.scenario.num_tasks
        start = time.perf_counter()
        seen = masks[: t + 1].any(0)
        active = np.arange(T) <= t
        cil, til = evaluate(state, x_test, y_test, v_test, active, seen, masks)
        cil, til = np.asarray(cil), np.asarray(til)  # blocks: eval_s includes the wait
        self.timer.add("eval_s", time.perf_counter() - start)
        n = self.n  # the padding seeds' rows dropped
        self.acc["class-il"][:, t, : t + 1] = evaluation.percent_seen(cil, counts, t)[:n]
        self.acc["task-il"][:, t, : t + 1] = evaluation.percent_seen(til, counts, t)[:n]
        if jax.process_index() == 0:  # one host speaks for a multi-host job, as with the bar
            scored = self.method.needs.settings or ("class-il", "task-il")
            shown = (("class-il", "class-IL"), ("task-il", "task-IL"))
            if self.scenario.single_setting is not None:  # one head: one number
                shown, scored = (("class-il", self.scenario.single_setting),), ("class-il",)
            accs = ", ".join(
                f"{name} {self.acc[s][:, t, : t + 1].mean():.2f}"
                for s, name in shown
                if s in scored
            )
            if self.logs():
                self.hooks.logger.task(
                    t,
                    {
                        self.scenario.single_setting or s: self.acc[s][:, t, : t + 1].tolist()
                        for s, _ in shown
                        if s in scored
                    },
                )
            log.info(
                "%s %s task %d/%d, seeds %s: %s (mean over tasks seen), %.0f s",
                self.method.name,
                self.scenario.name,
                t + 1,
                T,
                list(self.seeds[: self.n]),
                accs,
                time.perf_counter() - self.wall,
            )

    def after(self, state, t: int):
        """The measurements and callbacks after task t, then its checkpoint."""
        if self.hooks.after_task is not None:
            self.extra[t] = list(self.hooks.after_task(t, state))[: self.n]
        if self.hooks.on_task is not None and jax.process_index() == 0:
            self.hooks.on_task(t, state, self.keys_for(t, KEYS_STEPS))
        if self.manager is not None:
            self.save(state, t)
