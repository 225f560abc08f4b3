"""Grid search of a method's settings on a validation split, never on the test set.

    python -m experiments.tune --data-dir DATA --benchmark mnist-360 --method gss \\
        --buffer 500 --seeds 3 --grid lr=0.1,0.2 batch_size=4,16 minibatch_size=16,64

The DER paper's protocol (its Section 5): a grid search on a validation set of 10%
of the training set. Each point of the grid (`--grid KEY=V1,V2 ...`, every
combination, over the method's tuned row for the buffer) runs all seeds in one
vmapped program, and the points that differ only in settings a grid can sweep (floats that
enter the step as numbers: `cljax.run.sweep`) share that program, every point x every seed
trained together; on the benchmark built with `--valid-fraction` of each class's
training images held out (`scenarios.held_out`): it trains on the rest and is
scored, with the benchmark's own test protocol (MNIST-360: each held-out image
rotated as the test images are), on the held-out images. The points are written,
best first, to `experiments/results/tune_<method>_<benchmark>_<buffer>.{json,md}`
after each program; a point already in the json with the same seeds is not run again, so
an interrupted grid continues where it stopped (`--rerun` runs them all). Points that shared
a program show its times. Take the best point
into `cljax/tuned/<method>.py`, then measure it on the test set with
`experiments.reproduce_der`.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from cljax import methods, train
from cljax.benchmarks import scenarios
from cljax.run import sharding, sweep
from cljax.tuned import parse_overrides
from experiments import rows as table_rows
from experiments.tuned import run_tuned, run_tuned_grid

RESULTS = Path(__file__).parent / "results"


def grid_points(method: str, grid) -> list[dict]:
    """Every combination of `grid`'s `KEY=V1,V2,...` items, each as `--set` items typed for
    `method` (a ValueError, one line, for a key the method lacks or a bad value)."""
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        axes.append([f"{key}={v}" for v in values.split(",")])
    return [parse_overrides(method, combo) for combo in itertools.product(*axes)]


def groups(points: list[dict], swept: set) -> list[list[dict]]:
    """The points in groups that differ only in the settings of `swept` (in order)."""
    out: dict = {}
    for p in points:
        fixed = tuple(sorted((k, v) for k, v in p.items() if k not in swept))
        out.setdefault(fixed, []).append(p)
    return list(out.values())


def same_seeds(row: dict | None, seeds) -> bool:
    """Whether a point's row in the table ran exactly `seeds`."""
    return row is not None and tuple(row["seeds"]) == tuple(seeds)


def point_key(point: dict) -> str:
    """A point's name in the results: its settings as `key=value`, sorted."""
    return " ".join(f"{k}={v}" for k, v in sorted(point.items()))


def score(res: dict) -> tuple[float, float]:
    """(mean, std) over seeds of the run's final accuracy in its first setting (class-IL,
    domain-IL, or a stream's general)."""
    setting = next(iter(res["final_average_accuracy"]))
    acc = res["final_average_accuracy"][setting]
    return acc["mean"], acc["std"]


def summary(res: dict) -> dict:
    """A grid point's row in the table: its score (`score`), seeds, settings and times."""
    mean, std = score(res)
    return {
        "mean": mean,
        "std": std,
        "seeds": list(res["seeds"]),
        "hparams": res["hparams"],
        "train_s": res["timing"]["train_s"],
        "total_s": res["timing"]["total_s"],
    }


def table(points: dict) -> str:
    rows = sorted(points.items(), key=lambda kv: -kv[1]["mean"])
    out = [
        "| rank | settings | validation accuracy (mean +- std) | seeds | train s | total s |",
        "|---|---|---|---|---|---|",
    ]
    for rank, (key, p) in enumerate(rows, 1):
        out.append(
            f"| {rank} | `{key}` | {p['mean']:.2f} +- {p['std']:.2f} | {len(p['seeds'])} "
            f"| {p['train_s']:.1f} | {p['total_s']:.1f} |"
        )
    return "\n".join(out)


def command_line(args) -> str:
    """The command that reproduces the grid, for the table's header."""
    return (
        f"python -m experiments.tune --data-dir DATA --benchmark {args.benchmark} "
        f"--method {args.method}"
        + (f" --buffer {args.buffer}" if args.buffer else "")
        + f" --seeds {args.seeds}"
        + (f" --seed-devices {args.seed_devices}" if args.seed_devices > 1 else "")
        + f" --valid-fraction {args.valid_fraction} --grid "
        + " ".join(args.grid)
    )


def parser() -> argparse.ArgumentParser:
    """The command line (`main`'s options)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--benchmark", required=True, choices=scenarios.BENCHMARKS)
    p.add_argument("--method", required=True)
    p.add_argument("--buffer", type=int, default=None, help="buffer size (the tuned row's)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2")
    p.add_argument("--valid-fraction", type=float, default=0.1)
    p.add_argument("--seed-devices", type=int, default=1, help="as reproduce_der's")
    p.add_argument("--out", default=None, help="default: experiments/results/tune_...")
    p.add_argument("--rerun", action="store_true", help="run every point again")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.method not in methods.names():
        p.error(f"unknown method {args.method!r}; choose from {', '.join(methods.names())}")
    try:
        points = grid_points(args.method, args.grid)
    except ValueError as e:
        p.error(str(e))
    sharding.host_devices(args.seed_devices)  # before anything starts JAX's backend
    name = f"tune_{args.method}_{args.benchmark.replace('-', '')}_{args.buffer or 'nobuffer'}"
    out = Path(args.out) if args.out else RESULTS / name
    out_json, out_md = out.with_suffix(".json"), out.with_suffix(".md")
    try:
        scenario = scenarios.build(
            args.benchmark, args.data_dir, valid_fraction=args.valid_fraction
        )
    except (ValueError, scenarios.DataError) as e:
        p.error(str(e))
    done = {} if args.rerun else table_rows.load(out_json)
    seeds = tuple(range(args.seeds))
    run_fields = {}
    if args.seed_devices > 1:
        run_fields = {"devices": args.seed_devices, "seed_devices": args.seed_devices}
    train.log_tasks()
    started = time.perf_counter()
    swept = set(sweep.sweepable(methods.get(args.method).Config))
    for group in groups(points, swept):
        todo = [p for p in group if not same_seeds(done.get(point_key(p)), seeds)]
        if not todo:
            continue
        fixed = {k: v for k, v in group[0].items() if k not in swept}
        axes = {k: tuple(sorted({p[k] for p in todo})) for k in group[0] if k in swept}
        found = None
        if len(todo) > 1 and axes and len(todo) == len(sweep.points(axes)):  # one program
            try:
                results = run_tuned_grid(
                    scenario, args.method, args.buffer, seeds, axes, **fixed, **run_fields
                )
                found = {point_key({**fixed, **r["grid"]["values"]}): r for r in results}
            except ValueError as e:  # a setting the program would not follow: one by one
                print(f"note: {e}", flush=True)
        if found is None:
            found = {point_key(p): run_tuned(scenario, args.method, args.buffer, seeds, **p,
                                             **run_fields) for p in todo}  # fmt: skip
        for key, res in found.items():
            done = table_rows.save(out_json, {key: summary(res)}, done)
            print(f"{key}: {done[key]['mean']:.2f} +- {done[key]['std']:.2f}", flush=True)
    table_rows.write_table(
        out_md,
        f"# {args.method} on {args.benchmark}, buffer {args.buffer or '-'}: validation grid\n\n"
        f"Command: `{command_line(args)}`\n\n"
        f"Accuracy at the end of training on {args.valid_fraction:.0%} of each class's "
        "training images, held out (the test set is not read), with the benchmark's test "
        "protocol; mean +- std over seeds; the other settings are the method's tuned row "
        f"(`cljax/tuned/{args.method}.py`). {table_rows.machine()}; "
        f"this invocation {time.perf_counter() - started:.0f} s (times beside other jobs "
        "are an upper bound).\n\n" + table(done) + "\n",
    )
    print(f"wrote {out_md}")


if __name__ == "__main__":
    main()
