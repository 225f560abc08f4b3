"""Run a continual-learning method on a benchmark and write results.json and a plot.

    python -m experiments.run                                  # DER++ on seq-digits, no files needed
    python -m experiments.run --method derpp --benchmark seq-mnist --buffer-size 500 \
        --seeds 5 --data-dir ../shared/data --workdir runs/derpp-mnist [--resume] [--set lr=0.05]

Defaults per (method, benchmark, buffer size) come from experiments/configs/best_args.py.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
import time
from pathlib import Path

import jax

from cljax import methods, models, plots, report, scenarios, sharding, train
from cljax.checkpoint import CheckpointError
from cljax.data import DataError
from cljax.methods import NAMES
from cljax.models import DTYPES
from cljax.scenarios import BENCHMARKS
from experiments.configs import best_args

RUN_KEYS = ("batch_size", "n_epochs", "first_epochs", "steps", "dtype", "model")


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit code 2."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m experiments.run", description=__doc__.split("\n")[0]
    )
    p.add_argument("--method", default="derpp", help=f"one of: {', '.join(NAMES)}")
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
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyperparameter (lr, minibatch_size, alpha, beta, batch_size, n_epochs, steps, dtype, model, ...)",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="data-parallel over this many devices (default: all local devices)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


ZERO_OK = (
    *("ratio", "b1", "b2", "alpha", "beta", "ra_weight", "lamb_g", "s_max", "weight_decay"),
    *("per_class", "sparsity", "aux_weight", "retrain_epochs", "momentum"),
    *("warmup_epochs", "retrain_weight_decay"),
)


def parse_setting(key: str, text: str, default):
    """The value of `--set key=text`, typed like the method's default; UsageError if it is not."""
    if key == "dtype":
        if text not in DTYPES:
            raise UsageError(f"--set dtype={text}: choose one of {', '.join(DTYPES)}")
        return text
    if key == "model":
        if text not in models.MODELS:
            raise UsageError(f"--set model={text}: choose one of {', '.join(models.MODELS)}")
        return text
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise UsageError(f"--set {key}={text}: expected true or false")
        return text.lower() in ("true", "1")
    if isinstance(default, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(default, tuple):  # epochs, e.g. milestones=100,120 (empty: none)
        value = value if isinstance(value, tuple) else () if text.strip() == "" else (value,)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise UsageError(f"--set {key}={text}: expected positive integers, e.g. {key}=100,120")
        return value
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    lowest_ok = key in ZERO_OK
    if (
        not isinstance(value, expected)
        or isinstance(value, bool)
        or value < 0
        or (value == 0 and not lowest_ok)
    ):
        kind = "non-negative" if lowest_ok else "positive"
        raise UsageError(f"--set {key}={text}: expected a {kind} {expected.__name__}")
    return value


def resolve_hparams(method_name, benchmark, buffer_size, overrides):
    """Tuned defaults, then `--set` overrides, validated against what the method accepts."""
    module = methods.get(method_name)
    if buffer_size < 1:
        raise UsageError(f"--buffer-size must be positive, got {buffer_size}")
    hparams, tuned = best_args.get(benchmark, method_name, buffer_size)
    hparams.setdefault("dtype", "float32")
    hparams.setdefault("steps", None)
    hparams.setdefault("first_epochs", None)  # None: the first task trains n_epochs too
    hparams.setdefault("model", None)  # None: the benchmark's backbone
    defaults = {
        **module.HPARAMS,
        **{"batch_size": 1, "n_epochs": 1, "first_epochs": 1, "steps": 1, "dtype": "", "model": ""},
    }
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in defaults:
            raise UsageError(
                f"--set {key}: {method_name} has no such setting; choose from {', '.join(sorted(defaults))}"
            )
        hparams[key] = parse_setting(key, text, defaults[key])
    n_critic = hparams.get("n_critic", module.HPARAMS.get("n_critic", 1))
    if hparams["batch_size"] % n_critic:
        raise UsageError(
            f"batch_size {hparams['batch_size']} must be a multiple of n_critic {n_critic} "
            "(each step uses n_critic real chunks)"
        )
    return hparams, tuned


def main(argv=None) -> int:
    args = parse_args(argv)
    train.log_tasks()
    try:
        return _main(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args) -> int:
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
        hparams, tuned = resolve_hparams(args.method, name, args.buffer_size, args.set)
    except ValueError as e:
        raise UsageError(str(e)) from e
    workdir = Path(args.workdir or f"runs/{args.method}-{name}-{args.buffer_size}")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    has_run = (workdir / "results.json").exists() or (workdir / "checkpoints").exists()
    if args.resume and not has_run:
        print(f"note: nothing to resume in {workdir}; starting a new run")
    if has_run and not (args.resume or args.overwrite):
        raise UsageError(
            f"{workdir} already holds a run: pass --resume to continue it, --overwrite to "
            "replace it, or choose another --workdir"
        )
    try:
        scenario = scenarios.build(
            args.benchmark, args.data_dir, args.download, args.tasks, base_classes=args.base_classes
        )
    except (DataError, ValueError) as e:
        raise UsageError(str(e)) from e
    run_cfg = {k: hparams.pop(k) for k in RUN_KEYS}
    smallest = min(scenario.train_sizes)
    if run_cfg["batch_size"] > smallest:
        raise UsageError(
            f"batch_size {run_cfg['batch_size']} is larger than the {smallest} training items of "
            f"{scenario.name}'s smallest task; choose at most {smallest}"
        )
    buffer_size = hparams.get("buffer_size")
    if buffer_size is not None and buffer_size > sum(scenario.train_sizes):
        raise UsageError(
            f"--buffer-size {buffer_size} is larger than the {sum(scenario.train_sizes)} training "
            f"items of {args.benchmark}; choose a smaller buffer"
        )
    try:
        sharding.initialize()  # joins a multi-host job when its environment says so
        mesh = sharding.make_mesh(args.devices)
    except ValueError as e:
        raise UsageError(str(e)) from e
    if run_cfg["batch_size"] % mesh.size:
        raise UsageError(
            f"batch size {run_cfg['batch_size']} cannot be split over {mesh.size} devices; "
            f"pass --set batch_size=<a multiple of {mesh.size}> or --devices 1"
        )
    model = models.make(run_cfg["model"] or scenario.model, scenario.num_classes, run_cfg["dtype"])
    try:
        method = methods.get(args.method).make(model=model, input_fn=scenario.input_fn, **hparams)
    except ValueError as e:
        raise UsageError(str(e)) from e

    if args.overwrite and workdir.exists():
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = tuple(range(args.seed_offset, args.seed_offset + args.seeds))
    config = train.RunConfig(
        epochs=run_cfg["n_epochs"],
        batch_size=run_cfg["batch_size"],
        devices=args.devices,
        steps=run_cfg["steps"],
        first_epochs=run_cfg["first_epochs"],
        seeds=seeds,
        progress=not args.no_progress,
        checkpoint_every_s=args.checkpoint_minutes * 60,
    )
    if tuned is not None and tuned != buffer_size:
        print(
            f"note: no tuned row for buffer {buffer_size}; using buffer {tuned}'s hyperparameters"
        )
    print(
        f"{args.method} on {scenario.name} ({scenario.num_tasks} tasks), seeds {list(seeds)}, "
        f"hparams {method.hparams | run_cfg} -> {workdir}"
    )
    try:
        res = train.run(method, scenario, config, workdir=workdir, resume=args.resume)
    except CheckpointError as e:
        raise UsageError(str(e)) from e
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; the last finished task (or chunk of a long task) is checkpointed: "
            f"rerun with --resume "
            f"--workdir {workdir}",
            file=sys.stderr,
        )
        return 130
    res.pop("state")
    res["hparams"].update(
        dtype=run_cfg["dtype"], steps=run_cfg["steps"], model=run_cfg["model"] or scenario.model
    )
    if jax.process_index() != 0:  # several hosts: the first one writes the results
        return 0
    res["command"] = "python -m experiments.run " + " ".join(sys.argv[1:])
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report.write_json(workdir / "results.json", res)
    plots.accuracy_matrices(
        res["accuracy"], f"{args.method} on {scenario.name}", workdir / "accuracy.png"
    )
    print(summary_line(res))
    print(f"wrote {workdir / 'results.json'} and {workdir / 'accuracy.png'}")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
