"""Run a continual-learning method on a benchmark and write results.json and a plot.

    cljax                                  # DER++ on seq-digits, no files needed
    cljax --method derpp --benchmark seq-mnist --buffer-size 500 \
        --seeds 5 --data-dir ../shared/data --workdir runs/derpp-mnist [--resume] [--set lr=0.05]
    cljax --method der --list-hparams      # every setting, its default, range and doc

(`python -m experiments.run` in a checkout is the same command.) Settings per
(method, benchmark, buffer size) come from `cljax/tuned/<method>.py`; a run without a
tuned row says so and records "untuned defaults".
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import functools
import importlib
import importlib.util
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax

import cljax.run as run_lib
from cljax import methods, train, tuned
from cljax.benchmarks import scenarios, streams
from cljax.benchmarks.data import DataError
from cljax.benchmarks.scenarios import BENCHMARKS
from cljax.outputs import loggers, plots, report
from cljax.run import costs, jit_cache, sharding, sweep
from cljax.run import evaluate as evaluation
from cljax.run import workdir as workdir_lib
from cljax.run.checkpoint_io import CheckpointError, CheckpointWriteError
from cljax.run.workdir import WorkdirError

# seconds of the command's phases outside the driver, recorded in results.json's timing:
# start-up (interpreter and imports, from the process's start), reading the data
PHASES: dict = {"startup_s": None, "data_s": None}


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit code 2."""


def parse_args(argv):
    """The command line as an `argparse.Namespace` (`argv`: the arguments, None: sys.argv)."""
    p = argparse.ArgumentParser(prog="cljax", description=__doc__.split("\n")[0])
    p.add_argument("--method", default="derpp", help=f"one of: {', '.join(methods.names())}")
    p.add_argument("--benchmark", default="seq-digits", help=f"one of: {', '.join(BENCHMARKS)}")
    p.add_argument("--buffer-size", type=int, default=500, help="replay buffer capacity")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1), run under vmap")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed")
    p.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="number of tasks (class-IL: a divisor of the classes)",
    )
    p.add_argument(
        "--base-classes",
        type=int,
        default=0,
        help="classes of the first task (class-IL, e.g. 50 for seq-cifar100's B50); the others "
        "split equally over the other --tasks - 1 tasks",
    )
    p.add_argument(
        "--stream",
        choices=("fuzzy",),
        default=None,
        help="train a class-incremental benchmark as one stream without task boundaries, tasks "
        "blending over --fuzziness steps (van de Ven's fuzzy boundaries); mnist-360 is a stream",
    )
    p.add_argument(
        "--fuzziness",
        type=int,
        default=None,
        help="with --stream fuzzy: steps of blending on each side of a task boundary (default: "
        "a quarter of a task's steps)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        metavar="STEPS",
        help="on a stream: also evaluate about every STEPS steps, saved as results.json's "
        "accuracy_over_time and accuracy_over_time.png",
    )
    p.add_argument("--data-dir", default=None, help="dataset folder (default $CLJAX_DATA_DIR)")
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch missing MNIST-family files (md5-checked); CIFAR/SVHN through tensorflow-datasets",
    )
    p.add_argument(
        "--workdir", default=None, help="output folder (default runs/METHOD-BENCHMARK-BUFFER)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the workdir's last checkpoint"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing workdir's results")
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=10.0,
        help="within a long task, checkpoint after a chunk at most this often (a checkpoint "
        "after every task is always written)",
    )
    p.add_argument(
        "--compile-cache",
        metavar="DIR",
        default=None,
        help="keep compiled programs here, so that a rerun skips XLA's compiles (default: "
        "$CLJAX_CACHE_DIR/jit or ~/.cache/cljax/jit; JAX_COMPILATION_CACHE_DIR wins if set)",
    )
    p.add_argument("--no-compile-cache", action="store_true", help="compile every program anew")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the method or the run (see --list-hparams)",
    )
    p.add_argument(
        "--list-hparams",
        action="store_true",
        help="print the method's settings (defaults, ranges, docs) and its tuned row, then exit",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="use this many devices (default: on a CPU as many as --seed-devices, else all)",
    )
    p.add_argument(
        "--seed-devices",
        type=int,
        default=None,
        help="of the devices, how many split the seeds (each trains its own; the rest of "
        "the factor splits each batch). Default: on a CPU one a core (XLA host devices), at "
        "most one a seed; on accelerators 1 (all devices data-parallel)",
    )
    p.add_argument(
        "--on-nonfinite",
        choices=("stop", "continue"),
        default="stop",
        help="when a seed's loss or parameters become NaN/inf: stop (exit 3, last good "
        "checkpoint kept) or continue and record the seeds in results.json",
    )
    p.add_argument(
        "--grid",
        nargs="+",
        default=None,
        metavar="NAME=V1,V2",
        help="train every combination of these values of the method's float settings x every "
        "seed in one program (e.g. --grid lr=0.01,0.03 alpha=0.1,0.3): WORKDIR/point-N/ "
        "holds each point's results.json, WORKDIR/grid.json and grid.png the comparison",
    )
    p.add_argument(
        "--valid-fraction",
        type=float,
        default=0.0,
        help="hold out this fraction of each class's training images and score on them, not "
        "on the test set (model selection; the DER paper's grids: 0.1)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module (a dotted name, or a .py file) first: one that registers a "
        "method of its own (cljax.methods.register) makes it a --method",
    )
    p.add_argument(
        "--log",
        nargs="+",
        default=[],
        metavar="LOGGER",
        help="also log to: csv (WORKDIR/logs), tensorboard (WORKDIR/tensorboard; pip install "
        "'cljax[tensorboard]'), wandb (pip install 'cljax[wandb]'; WANDB_MODE=offline logs "
        "locally); several at once",
    )
    return p.parse_args(argv)


def list_hparams(args) -> int:
    """Prints the method's and the run's settings, and what is tuned for this benchmark."""
    module = methods.get(args.method)
    name = scenarios.benchmark_name(args.benchmark, args.base_classes)
    print(f"{args.method} ({module.__name__}.Config):")
    print("\n".join("  " + line for line in module.Config.describe()))
    print("run settings:")
    print("\n".join("  " + line for line in tuned.RunSettings.describe()))
    row = tuned.lookup(args.method, name, args.buffer_size)
    if row is None:
        print(f"tuned for {name}: nothing ({tuned.UNTUNED})")
    else:
        where = "" if row.buffer_size is None else f", buffer {row.buffer_size}"
        print(f"tuned for {name}{where} ({row.source}): {row.values}")
    return 0


# Exit codes besides 0 and 2 (bad input): a run that diverged, a checkpoint that could not be
# written, and stops asked for by a signal (128 + its number, as a shell reports them).
EXIT_DIVERGED, EXIT_WRITE_FAILED = 3, 1
EXIT_SIGNAL = {signal.SIGTERM: 143, signal.SIGINT: 130}


def main(argv=None) -> int:
    """The `cljax` command: exit status 0, 2 for bad input (one line on stderr), 1 for a
    checkpoint that could not be written, 3 for a diverged run, 130/143 after a signal."""
    PHASES["startup_s"] = costs.process_age()  # the interpreter and the imports
    args = parse_args(argv)
    if not args.list_hparams:
        preload()
    train.log_tasks()
    if not (args.no_compile_cache or args.list_hparams):  # before anything compiles
        warning = jit_cache.enable(args.compile_cache)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    try:
        return _main(args)
    except (UsageError, WorkdirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def preload() -> threading.Thread:
    """Imports orbax (checkpoints) and matplotlib's pyplot (the plots) in a background thread
    while the main one reads the data, starts the backend and trains: about 0.4 s and 0.6 s
    of a short run's critical path on the 2-core VM otherwise (`docs/speed.md`). The main
    thread's own imports of them wait for it. Returns the thread."""

    def work():
        try:
            importlib.import_module("orbax.checkpoint")
            plots.import_pyplot()
        except Exception:  # imported again where used, and reported there
            pass

    thread = threading.Thread(target=work, name="cljax-preload", daemon=True)
    thread.start()
    return thread


def import_plugins(specs) -> None:
    """Imports each `--import` module (dotted name, found from the current folder too, or a
    .py file); UsageError, one line, for one that cannot be imported."""
    for spec in specs:
        try:
            if spec.endswith(".py"):
                path = Path(spec)
                if not path.is_file():
                    raise FileNotFoundError(f"no file {spec}")
                loader = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(loader)
                sys.modules[path.stem] = module
                loader.loader.exec_module(module)
            else:
                if os.getcwd() not in sys.path and "" not in sys.path:
                    sys.path.append(os.getcwd())
                importlib.import_module(spec)
        except Exception as e:  # its own errors too: one line, not a traceback
            raise UsageError(f"--import {spec}: {type(e).__name__}: {e}") from e


def _main(args) -> int:
    import_plugins(args.imports)
    try:
        methods.get(args.method)
        if args.benchmark not in scenarios.BENCHMARKS:
            raise ValueError(
                f"unknown benchmark {args.benchmark!r}; choose one of: {', '.join(scenarios.BENCHMARKS)}"
            )
        if args.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
        if args.base_classes < 0:
            raise ValueError(f"--base-classes must be positive, got {args.base_classes}")
        name = scenarios.benchmark_name(args.benchmark, args.base_classes)
        if args.buffer_size < 1:
            raise ValueError(f"--buffer-size must be positive, got {args.buffer_size}")
        if args.list_hparams:
            return list_hparams(args)
        overrides = tuned.parse_overrides(args.method, args.set)
        settings = tuned.resolve(args.method, name, args.buffer_size, overrides)
        grid = None
        if args.grid:
            grid = sweep.parse(args.grid)
            sweep.check(methods.get(args.method), settings.config, grid)
            if args.eval_every is not None:
                raise ValueError("--eval-every is not available with --grid")
    except ValueError as e:
        raise UsageError(str(e)) from e
    stream = f"-{args.stream}" if args.stream else ""
    kind = "-grid" if grid else ""
    workdir = Path(args.workdir or f"runs/{args.method}-{name}{stream}-{args.buffer_size}{kind}")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    workdir_lib.check(workdir)
    lock = workdir_lib.Lock(workdir)
    lock.refuse_if_held()
    has_run = any((workdir / f).exists() for f in ("results.json", "grid.json", "checkpoints"))
    if args.resume and not has_run:
        print(f"note: nothing to resume in {workdir}; starting a new run")
    if has_run and not (args.resume or args.overwrite):
        raise UsageError(
            f"{workdir} already holds a run: pass --resume to continue it, --overwrite to "
            "replace it, or choose another --workdir"
        )
    data_start = time.perf_counter()
    try:
        scenario = scenarios.build(
            args.benchmark,
            args.data_dir,
            args.download,
            args.tasks,
            base_classes=args.base_classes,
            class_order=settings.run.class_order,
            class_seed=settings.run.class_seed,
            brightness=settings.run.brightness,
            valid_fraction=args.valid_fraction,
        )
        if args.stream == "fuzzy":
            scenario = streams.fuzzy(scenario, args.fuzziness)
        elif args.fuzziness is not None:
            raise ValueError("--fuzziness needs --stream fuzzy")
    except (DataError, ValueError) as e:
        raise UsageError(str(e)) from e
    PHASES["data_s"] = time.perf_counter() - data_start
    run = settings.run
    smallest = min(scenario.train_sizes)
    if run.batch_size > smallest:
        raise UsageError(
            f"batch_size {run.batch_size} is larger than the {smallest} training items of "
            f"{scenario.name}'s smallest task; choose at most {smallest}"
        )
    buffer_size = settings.config.to_dict().get("buffer_size")
    if buffer_size is not None and buffer_size > sum(scenario.train_sizes):
        raise UsageError(
            f"--buffer-size {buffer_size} is larger than the {sum(scenario.train_sizes)} training "
            f"items of {args.benchmark}; choose a smaller buffer"
        )
    seeds = tuple(range(args.seed_offset, args.seed_offset + args.seeds))
    n_models = len(seeds) * (len(sweep.points(grid)) if grid else 1)
    try:
        args.devices, args.seed_devices = split_devices(args, n_models)
        method = tuned.build(settings, scenario)
        if grid and method.host.resize is not None:
            raise ValueError(
                f"{args.method} changes its shapes with the data: its points cannot share one "
                "program; run them as separate commands"
            )

        config = run.run_config(
            devices=args.devices,
            seed_devices=args.seed_devices,
            seeds=seeds,
            progress=not args.no_progress,
            checkpoint_every_s=args.checkpoint_minutes * 60,
            on_nonfinite=args.on_nonfinite,
            record=run.record(scenario.model),
        )
        config = dataclasses.replace(config, program_key=program_key(args, settings, config))
        # the run's shape, checked before anything is written (the stream drawn, the devices)
        model_seeds = tuple(s for _ in range(n_models // len(seeds)) for s in seeds)
        plan = run_lib.plan_run(method, scenario, dataclasses.replace(config, seeds=model_seeds))
        if grid:  # a setting the program would not follow is refused before anything is written
            kw = {"model": tuned.model_of(settings, scenario), "input_fn": scenario.input_fn}
            sweep.check_effect(
                methods.get(args.method), settings.config, grid, scenario, config, **kw
            )
        if args.eval_every is not None and (scenario.stream is None or args.eval_every < 1):
            raise ValueError("--eval-every takes a positive number of steps, on a stream")
    except ValueError as e:
        raise UsageError(str(e)) from e
    workdir_lib.check(workdir, checkpoint_bytes(method, scenario, n_models))
    try:
        loggers.check(args.log)  # a logger that cannot start stops the run before it begins
    except loggers.LoggerError as e:
        raise UsageError(str(e)) from e
    if jax.process_index() == 0:  # one lock for a multi-host job, held by host 0
        lock.acquire(warn=lambda line: print(line, file=sys.stderr))
    try:
        if grid:
            return _run_grid(args, settings, scenario, config, workdir, grid)
        return _run(args, method, plan, settings, workdir)
    finally:
        lock.release()


# the command line's settings that never change a compiled program: where the run is written,
# how it reports and whether it resumes
NOT_IN_PROGRAMS = (
    "workdir",
    "overwrite",
    "resume",
    "no_progress",
    "compile_cache",
    "no_compile_cache",
    "log",
    "checkpoint_minutes",
)


def program_key(args, settings, config) -> str | None:
    """What determines the run's compiled programs with the package's source (`RunConfig.
    program_key`, `cljax.run.program_store`): the rest of the command line, the resolved
    settings and the run's config. None with `--import`: a user's module is code the key
    would not see."""
    if args.imports:
        return None
    kept = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_IN_PROGRAMS}
    config = dataclasses.replace(config, progress=True, checkpoint_every_s=0.0)
    return repr((kept, settings.config, settings.run, config))


def split_devices(args, n_seeds: int) -> tuple[int | None, int]:
    """`(devices, seed_devices)` of the run. Starts JAX's backend (joining a multi-host job
    first when its environment says so); on a CPU, with as many XLA host devices as the seeds
    can use, one a core, unless the user's XLA_FLAGS say how many (the flag is set for this
    process alone: subprocesses get the user's XLA_FLAGS). Default split: on one CPU host,
    every device splits the seeds (at most one a seed); elsewhere all are data-parallel."""
    flags = os.environ.get("XLA_FLAGS")
    if not sharding.joining():  # a multi-host job keeps one device a process (untested else)
        cores = len(os.sched_getaffinity(0))
        sharding.host_devices(max(args.devices or 1, args.seed_devices or min(n_seeds, cores)))
    try:
        sharding.initialize()  # joins a multi-host job when its environment says so
        platform = jax.devices()[0].platform  # the backend reads XLA_FLAGS here, once
    finally:
        if flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = flags
    devices, seed_devices = args.devices, args.seed_devices
    if seed_devices is None:
        seed_devices = 1
        if platform == "cpu" and jax.process_count() == 1:  # all devices split the seeds
            seed_devices = min(n_seeds, devices or len(jax.devices()))
            devices = devices or seed_devices
    elif devices is None and platform == "cpu":
        devices = seed_devices
    return devices, seed_devices


def checkpoint_bytes(method, scenario, n_seeds: int) -> int:
    """About what the folder needs: two checkpoints of the seeds' initial state, plus slack."""
    example = scenario.train(0)[0][:1]
    shapes = jax.eval_shape(method.init, jax.random.key(0), example)
    size = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(shapes) if hasattr(a, "size"))
    return 2 * n_seeds * size + 2**20


def _run(args, method, plan, settings, workdir: Path) -> int:
    """Trains into `workdir` (checked and locked) and writes results.json and the plot."""
    scenario, seeds = plan.scenario, plan.seeds[: plan.n_real]
    if args.overwrite and workdir.exists():
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    config = plan.config
    over_time, probe = {}, None
    if args.eval_every:  # a stream evaluated after every chunk of about that many steps
        chunks, ends = plan.eval_ends(args.eval_every)
        over_time = {"ends": ends}
        config = dataclasses.replace(config, chunks_per_task=chunks)
        mesh = run_lib.mesh_of(plan)
        probe = evaluation.accuracy_probe(
            method, scenario, config.eval_batch, mesh, config.class_il
        )
    tuned.note_tuning(settings, scenario.name, args.buffer_size)
    print(
        f"{args.method} on {scenario.name} ({scenario.num_tasks} tasks), seeds {list(seeds)}, "
        f"hparams {report.recorded_hparams(method.hparams, config)} -> {workdir}"
    )
    on_task = None
    if method.host.sample is not None:
        samples = workdir / "samples"
        on_task = functools.partial(plots.write_samples, method, samples, scenario.num_tasks)
    hooks = _Hooks(on_task, probe, over_time)
    logger = None
    if jax.process_index() == 0:
        try:
            logger = loggers.make(args.log, workdir)
            if logger is not None:
                hparams = report.recorded_hparams(method.hparams, config)
                logger.start(
                    {"method": args.method, "benchmark": scenario.name, "seeds": list(seeds)}
                    | {"hparams": hparams}
                )
        except loggers.LoggerError as e:
            if logger is not None:
                logger.close()
            raise UsageError(str(e)) from e
    try:
        return _train_and_write(args, method, scenario, settings, config, workdir, logger, hooks)
    finally:
        if logger is not None:
            logger.close()


class _Hooks(NamedTuple):
    """What `_run` adds to a training run: the per-task callback (samples of a generative
    method), the accuracy probe after each chunk and the stream's evaluation points."""

    on_task: Callable | None
    probe: Callable | None
    over_time: dict


def _train_and_write(args, method, scenario, settings, config, workdir, logger, hooks) -> int:
    """Trains, then writes results.json and the plots (the loggers told as it goes)."""
    seeds = config.seeds
    on_task, probe, over_time = hooks
    res = _guarded(
        workdir,
        lambda stop: train.run(
            method,
            scenario,
            config,
            workdir=workdir,
            resume=args.resume,
            on_task=on_task,
            stop_requested=stop,
            after_chunk=probe,
            logger=logger,
        ),
    )
    if isinstance(res, int):
        return res
    res.pop("state")
    res["tuned"] = settings.tuned_record()
    if jax.process_index() != 0:  # several hosts: the first one writes the results
        return 0
    res["command"] = "cljax " + " ".join(sys.argv[1:])
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if over_time:  # [task][chunk][seed] -> the points of the one task of the stream
        points = res.pop("after_chunk")[0]
        res["accuracy_over_time"] = {"steps": over_time["ends"], "accuracy": points}
    start = time.perf_counter()
    res["timing"].update({k: round(v, 4) for k, v in PHASES.items() if v is not None})
    report.write_json(workdir / "results.json", res)
    if logger is not None:
        logger.finish(res)
    written = time.perf_counter()
    plots.accuracy_matrices(
        res["accuracy"], f"{args.method} on {scenario.name}", workdir / "accuracy.png"
    )
    if over_time:
        plots.accuracy_over_time(
            over_time["ends"],
            points,
            f"{args.method} on {scenario.name}, {len(seeds)} seeds",
            workdir / "accuracy_over_time.png",
        )
    res["timing"]["results_s"] = round(written - start, 4)
    res["timing"]["plot_s"] = round(time.perf_counter() - written, 4)
    wall = costs.process_age()  # the process so far: what the parts above leave is the rest
    if wall is not None:
        res["timing"]["wall_s"] = round(wall, 4)
    report.write_json(workdir / "results.json", res)  # again, with the last costs
    print(summary_line(res))
    print(f"wrote {workdir / 'results.json'} and {workdir / 'accuracy.png'}")
    return 0


def _run_grid(args, settings, scenario, config, workdir: Path, grid: dict) -> int:
    """Trains every point of `grid` x every seed in one program (`cljax.run.sweep`) and writes
    each point's results.json and plot under WORKDIR/point-N, then grid.json and grid.png."""
    if args.overwrite and workdir.exists():
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    n_points = len(sweep.points(grid))
    tuned.note_tuning(settings, scenario.name, args.buffer_size)
    measure = "validation" if args.valid_fraction else "test"
    print(
        f"{args.method} on {scenario.name} ({scenario.num_tasks} tasks): grid "
        f"{' '.join(args.grid)} ({n_points} points) x seeds {list(config.seeds)} in one program, "
        f"scored on the {measure} set -> {workdir}"
    )
    results = _guarded(
        workdir,
        lambda stop: sweep.run_grid(
            methods.get(args.method),
            settings.config,
            grid,
            scenario,
            config,
            model=tuned.model_of(settings, scenario),
            input_fn=scenario.input_fn,
            workdir=workdir,
            resume=args.resume,
            stop_requested=stop,
            checked=True,
        ),
    )
    if isinstance(results, int):
        return results
    if jax.process_index() != 0:
        return 0
    for res in results:
        res.pop("state")
        res["tuned"] = settings.tuned_record()
        res["command"] = "cljax " + " ".join(sys.argv[1:])
        res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        values = ", ".join(f"{k}={v:g}" for k, v in res["grid"]["values"].items())
        folder = workdir / f"point-{res['grid']['point']}"
        folder.mkdir(exist_ok=True)
        report.write_json(folder / "results.json", res)
        plots.accuracy_matrices(
            res["accuracy"], f"{args.method} on {scenario.name}, {values}", folder / "accuracy.png"
        )
    summary = sweep.summary(results, measure)
    report.write_json(workdir / "grid.json", summary)
    plots.grid(summary, workdir / "grid.png")
    print(sweep.table(summary))
    best = summary["points"][summary["best"]]
    t = summary["timing"]
    print(
        f"best ({measure}): "
        + ", ".join(f"{k}={v:g}" for k, v in best["values"].items())
        + f" | {n_points} points x {len(config.seeds)} seeds: train {t['train_s']:.1f}s, "
        f"compile {t['compile_s']:.1f}s, total {t['total_s']:.1f}s"
    )
    print(f"wrote {workdir}/point-*/results.json, {workdir / 'grid.json'} and grid.png")
    return 0


def _guarded(workdir: Path, call):
    """`call(stop_request)`'s value, or the exit code of how it stopped (a signal, a
    divergence, a checkpoint that cannot be read or written), said on stderr."""
    resume_line = f"rerun with --resume --workdir {workdir}"
    say = lambda line: print(line, file=sys.stderr)
    try:
        with train.StopRequest(say=say) as stop:
            return call(stop)
    except CheckpointError as e:
        raise UsageError(str(e)) from e
    except train.Diverged as e:
        say(f"error: {e}")
        return EXIT_DIVERGED
    except CheckpointWriteError as e:
        say(f"error: {e}")
        return EXIT_WRITE_FAILED
    except train.Interrupted as e:
        say(f"{e}; the checkpoint is written: {resume_line}")
        return EXIT_SIGNAL.get(stop.signum, 130)
    except KeyboardInterrupt:
        say(
            f"\ninterrupted; the last finished task (or chunk of a long task) is checkpointed: {resume_line}"
        )
        return 130


def summary_line(res) -> str:
    """One human-readable line of final accuracies and timing."""
    parts = []
    for setting, stats in res["final_average_accuracy"].items():
        parts.append(f"{setting} {stats['mean']:.2f} +- {stats['std']:.2f}")
    t = res["timing"]
    return (
        f"final average accuracy: {'; '.join(parts)} | train {t['train_s']:.1f}s, "
        f"compile {t['compile_s']:.1f}s, total {t['total_s']:.1f}s, {t['steps_per_s']} steps/s"
    )


def entry(argv=None) -> None:
    """The `cljax` console script: `main`, then the process ends without Python's teardown
    of its modules. Tearing down jax's and XLA's objects took 0.6-0.7 s after every run on
    the 2-core VM (`docs/speed.md`); the atexit handlers still run (loggers, a multi-host
    job's shutdown), the output is flushed, and the exit status is `main`'s. An exception
    leaves through Python as usual."""
    status = main(argv)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status or 0))


if __name__ == "__main__":
    entry()
