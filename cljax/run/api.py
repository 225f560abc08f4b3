"""The driver: one compiled program per task, seeds as a `vmap` axis.

For each task the training arrays are moved to the device once; the batch
schedule (a shuffle per epoch and seed) is a small index array, and batches
are gathered by index inside a `lax.scan` over steps, in a few compiled chunks
(`cljax.run.chunks`). After each task every seen task's test set is
evaluated in one compiled call, the accuracy matrices are updated and an
orbax checkpoint is written; a task that runs long also writes one after a
chunk every `checkpoint_every_s` seconds. `resume=True` continues from the
last one and gives the same result as an uninterrupted run (every random
choice is derived from the seed, the task index and the step).

The parts (`cljax/run/`): `plan.plan_run` (the run's shape, pure numpy), `feed` (where the
data comes from), `execute.SeedsRun` (one vmapped run: set-up, resume, the per-task loop),
`chunks.train_task` (one task's chunks) around `compiled.make_task_runner` (the compiled
chunk), `evaluate.Evaluator` and `checkpointing.Checkpoints`; and here `run` (seeds
together, or one after another for methods whose shapes depend on the data, joined by
`report.merge_seeds`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cljax.benchmarks.scenario import Scenario
from cljax.methods import Method
from cljax.outputs import report
from cljax.run.compiled import Diverged
from cljax.run.execute import Interrupted, SeedsRun
from cljax.run.plan import schedule, step_sizes, task_info

__all__ = [
    "Diverged",
    "Hooks",
    "Interrupted",
    "RunConfig",
    "StopRequest",
    "SeedsRun",
    "log_tasks",
    "run",
    "schedule",
    "step_sizes",
    "task_info",
]

log = logging.getLogger(__name__)


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever `sys.stderr` is when it writes (a test harness or a
    notebook may replace it after the handler is made)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


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
        handler = _CurrentStderr()
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
    # of those devices, how many split the seeds (each trains its own seeds; the seeds are
    # padded to a multiple with copies of the first ones, dropped from the results); the
    # rest of the factor splits each batch. Capped at the number of seeds.
    seed_devices: int = 1
    steps: int | None = None  # optimizer steps per task; overrides `epochs` when set
    first_epochs: int | None = None  # the first task's epochs when it differs (the DER paper's B50)
    # with a workdir, also checkpoint mid-task: after the first chunk that ends this long after
    # the last checkpoint (a run stopped mid-task then loses at most about this much work)
    checkpoint_every_s: float = 600.0
    # "sequential": each task's data in turn; "joint": once, after the last task, on the union
    # of every task's training data (the upper bound of the tables); None: the method's own
    # (`Method.needs.protocol`)
    protocol: str | None = None
    # a seed's loss or parameters non-finite: "stop" the run (`Diverged`, the last
    # good checkpoint kept) or "continue" and record the seeds under results["nonfinite"]
    on_nonfinite: str = "stop"
    # an epoch's last batch when the items do not fill it: "short" (only the items left, as
    # Mammoth's PyTorch DataLoader; its own compiled step) or "fill" (topped up with the
    # epoch's first items) or "drop" (left out: every step a full batch of fresh items, a
    # PyTorch DataLoader with drop_last, as van de Ven's code trains). Methods whose steps
    # need the full batch (`needs.last_batch`) and data-parallel runs use "fill" for "short";
    # results record the one used.
    last_batch: str = "short"
    # the outputs class-IL accuracy takes its argmax over: "all" (every output, as Mammoth
    # evaluates) or "seen" (the classes of the tasks seen so far); the same after the last task
    class_il: str = "all"
    # the learning rate x lr_gamma after each of these epochs of every task (PyTorch's
    # MultiStepLR, a fresh one each task, as Mammoth; `cljax.run.lr_schedule`); () : constant
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    # settings beside these that results.json records under `hparams` (the CLI's backbone,
    # dtype and class order: `RunSettings.record`); the run itself does not read them
    record: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # a string that determines every program the run compiles, with the package's source and
    # the arguments' shapes (the `cljax` command makes one from its command line): the task
    # programs are then kept beside JAX's compile cache and loaded by it, skipping tracing and
    # lowering (`cljax.run.program_store`). None: traced and lowered every run
    program_key: str | None = None

    def __post_init__(self):
        if self.on_nonfinite not in ("stop", "continue"):
            raise ValueError(f"on_nonfinite must be stop or continue, got {self.on_nonfinite!r}")
        if self.protocol not in (None, "sequential", "joint"):
            raise ValueError(f"protocol must be sequential or joint, got {self.protocol!r}")
        if self.last_batch not in ("short", "fill", "drop"):
            raise ValueError(f"last_batch must be short, fill or drop, got {self.last_batch!r}")
        if self.class_il not in ("all", "seen"):
            raise ValueError(f"class_il must be all or seen, got {self.class_il!r}")
        ms = tuple(self.lr_milestones)
        if any(not isinstance(m, int) or m < 1 for m in ms) or list(ms) != sorted(set(ms)):
            raise ValueError(
                f"lr_milestones must be increasing epochs >= 1, got {self.lr_milestones!r}"
            )
        if self.lr_gamma < 0:
            raise ValueError(f"lr_gamma must be >= 0, got {self.lr_gamma!r}")

    def lr_schedule(self) -> dict:
        """The schedule as results and checkpoints record it: `{}` for a constant rate."""
        if not self.lr_milestones:
            return {}
        return {"lr_milestones": list(self.lr_milestones), "lr_gamma": self.lr_gamma}

    def epochs_of(self, task: int) -> int:
        """Epochs of task `task`: `first_epochs` for the first one when set, else `epochs`."""
        return self.first_epochs if task == 0 and self.first_epochs else self.epochs


@dataclasses.dataclass
class Hooks:
    """The host-side callbacks of `run` (each optional).

    `after_task(t, state) -> [value per seed]` and `after_chunk(t, c, state)`
    measure (their values land in the results and the checkpoints);
    `on_task(t, state, keys)` acts (e.g. writes sample grids) on host 0.
    """

    after_task: Callable | None = None
    after_chunk: Callable | None = None
    on_task: Callable | None = None
    # `() -> bool`, polled after each chunk and task: True saves a checkpoint there and raises
    # `Interrupted` (the CLI's SIGTERM / SIGINT handler, `StopRequest`)
    stop_requested: Callable[[], bool] | None = None
    # what a logger (`cljax.outputs.loggers`) is told, on host 0: `chunk(t, c, step, {metric: [mean
    # over the chunk's steps, per seed]})` after each chunk (`step`: the run's steps so far)
    # and `task(t, {setting: [[accuracy on task 0..t] per seed]})` after each task's scoring
    logger: Any = None


def run(
    method: Method,
    scenario: Scenario,
    config: RunConfig,
    workdir: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    after_task: Callable[[int, Any], list] | None = None,
    after_chunk: Callable[[int, int, Any], list] | None = None,
    on_task: Callable[[int, Any, Any], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    logger=None,
) -> dict:
    """Trains `method` on every task of `scenario` for every seed.

    Methods with `host.resize` (data-dependent shapes) run their seeds one after
    another, each in `WORKDIR/seed-S`; the others run all seeds at once under `vmap`.
    What the method needs (`method.needs`: the joint protocol, full batches) is read
    from it through the run plan (`cljax.run.plan_run`).

    Args:
        method: what `methods.get(name).make(...)` returns (or a `Method` of your own).
        scenario: the benchmark (`scenarios.build(name)`).
        config: how to train: epochs, batch size, seeds, devices.
        workdir: where checkpoints go: after every task, and mid-task after a chunk
            every `config.checkpoint_every_s`; None writes none.
        resume: continue from the latest checkpoint in `workdir`.
        stop_after: `t` returns after task t (as if interrupted), `(t, c)` after chunk
            c (not the last) of task t, its checkpoint written (how resuming is tested).
        after_task: `after_task(t, state) -> [one JSON value per seed]`, host code after
            task t's evaluation with the seed-stacked state; the values land in
            `results["after_task"][t][seed]` and are checkpointed with the task.
        after_chunk: `after_chunk(t, c, state)` likewise after each compiled chunk of
            task t (mid-task, before `end_task`): `results["after_chunk"][t][c][seed]`.
        on_task: `on_task(t, state, keys)` on host 0 after each task's evaluation (e.g.
            `plots.write_samples` of `method.host.sample`).
        stop_requested: `() -> bool`, polled after every chunk and task; True
            checkpoints there (with a workdir) and raises `Interrupted`.
        logger: told each chunk's losses and each task's accuracies (`Hooks.logger`,
            e.g. `cljax.outputs.loggers.Loggers`).

    Returns:
        The results dictionary (`cljax/outputs/results.schema.json`), plus `"state"`: the final
        seed-stacked state (a list of per-seed states for methods that resize).

    Raises:
        ValueError: a run that cannot be made (see `plan_run`).
        Diverged: a seed went non-finite with `config.on_nonfinite="stop"`.
        Interrupted: `stop_requested()` said so; the checkpoint is written.
    """
    hooks = Hooks(after_task, after_chunk, on_task, stop_requested, logger)
    seeds = tuple(config.seeds)
    if method.host.resize is None or len(seeds) == 1:
        parts = [SeedsRun(method, scenario, config, workdir, hooks).run(resume, stop_after)]
    else:
        parts = []
        for seed in seeds:
            sub = None if workdir is None else Path(workdir) / f"seed-{seed}"
            one = dataclasses.replace(config, seeds=(seed,))
            parts.append(SeedsRun(method, scenario, one, sub, hooks).run(resume, stop_after))
    results = [report.results(method, scenario, p.config, **p.results_args()) for p in parts]
    out = functools.reduce(report.merge_seeds, results)
    out["state"] = parts[0].state if len(parts) == 1 else [p.state for p in parts]
    out["devices"] = parts[0].devices
    out["seed_devices"] = parts[0].seed_devices
    if not parts[0].per_task:
        out.pop("per_task", None)
    for name in ("after_task", "after_chunk"):
        if getattr(hooks, name) is None:
            out.pop(name, None)
    nonfinite = {str(s): v for p in parts for s, v in p.nonfinite.items()}
    if nonfinite:
        out["nonfinite"] = nonfinite
    return out


class StopRequest:
    """SIGTERM / SIGINT handlers that ask a run to stop at its next chunk boundary.

    Use as a context manager around `run(..., stop_requested=request)`: the first
    signal is remembered (`signum`) and the run checkpoints and raises `Interrupted`
    after the chunk in flight; a second one stops at once (`KeyboardInterrupt`). The
    previous handlers come back on exit. Signals only reach the main thread.
    """

    def __init__(self, say=print):
        self.signum = None
        self.say = say
        self._old = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        self.say(
            f"{signal.Signals(signum).name}: stopping after the current chunk, with a checkpoint "
            "(signal again to stop at once)"
        )

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
