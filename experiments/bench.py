"""Training speed of each method: compile time, steps/s and samples/s, 1 seed vs N vmapped.

    python -m experiments.bench --benchmark seq-mnist --data-dir ../shared/data --seeds 5

For every method the same row is run twice with the tuned hyperparameters:
one seed, then N seeds under `vmap` in one program. "train s" excludes
compilation and evaluation; "total s" is the whole run, compile and
evaluation included. Writes `experiments/results/bench-BENCHMARK-PLATFORM.{md,json}`.
Expected runtime on a 2-core CPU (seq-mnist, 4 methods, 5 seeds): about 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import jax

from cljax import methods, models, scenarios, train
from experiments.configs import best_args


def bench_row(scenario, method_name, buffer_size, seeds, epochs=None):
    """Results of one run (state dropped) with the tuned hyperparameters."""
    hparams, _ = best_args.get(scenario.name, method_name, buffer_size)
    n_epochs = hparams.pop("n_epochs")
    config = train.RunConfig(
        epochs=epochs or n_epochs,
        batch_size=hparams.pop("batch_size"),
        seeds=seeds,
        progress=False,
    )
    model = models.make(scenario.model, scenario.num_classes)
    method = methods.get(method_name).make(model=model, input_fn=scenario.input_fn, **hparams)
    res = train.run(method, scenario, config)
    res.pop("state")
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--benchmark", default="seq-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--methods", nargs="+", default=["sgd", "er", "der", "derpp"])
    p.add_argument("--buffer-size", type=int, default=500)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None, help="override epochs per task")
    p.add_argument("--out-dir", default="experiments/results")
    args = p.parse_args(argv)

    scenario = scenarios.build(args.benchmark, args.data_dir)
    device = jax.devices()[0]
    where = (
        f"{device.platform}-{os.cpu_count()}cpu" if device.platform == "cpu" else device.device_kind
    )
    rows = {}
    for name in args.methods:
        one = bench_row(scenario, name, args.buffer_size, (0,), args.epochs)
        many = bench_row(scenario, name, args.buffer_size, tuple(range(args.seeds)), args.epochs)
        rows[name] = {"1": one["timing"], str(args.seeds): many["timing"]}
        print(
            f"{name}: 1 seed train {one['timing']['train_s']:.2f}s "
            f"({one['timing']['steps_per_s']} steps/s), {args.seeds} seeds total "
            f"{many['timing']['total_s']:.1f}s",
            flush=True,
        )

    n = str(args.seeds)
    lines = [
        f"# Training speed: {args.benchmark}, buffer {args.buffer_size}, on {where}",
        "",
        f"Command: `python -m experiments.bench --benchmark {args.benchmark} --seeds {args.seeds}`"
        f" on {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}"
        f" ({device.platform}: {device.device_kind}).",
        "",
        f"| method | compile s | train s (1 seed) | steps/s | samples/s | {n} seeds: compile s "
        f"| {n} seeds: train s | {n} seeds: total s | {n} x 1-seed total s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        one, many = r["1"], r[n]
        lines.append(
            f"| {name} | {one['compile_s']:.2f} | {one['train_s']:.2f} | {one['steps_per_s']} | "
            f"{one['samples_per_s']} | {many['compile_s']:.2f} | {many['train_s']:.2f} | "
            f"{many['total_s']:.2f} | {args.seeds * one['total_s']:.2f} |"
        )
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench-{args.benchmark}-{where}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
