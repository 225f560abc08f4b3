"""Training speed of each method: compile time, steps/s and samples/s, 1 seed vs N vmapped.

    python -m experiments.bench --benchmark seq-mnist --data-dir ../shared/data --seeds 5
    python -m experiments.bench --synthetic-cifar --steps 200 --seeds 5   # accelerators
    python -m experiments.bench --limit --data-dir ../shared/data --methods derpp er

The third measures against the machine's own limit (see `experiments/bench_limit.py`).

The second form measures DER++ (buffer 500) with the reduced ResNet-18 on
CIFAR-shaped random data (throughput does not depend on the pixels) at batch
32 and 128: images/s, steps/s, compile time and peak device memory, for one
seed and for N seeds under `vmap`, on whatever devices jax sees (`--devices`).

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
import resource
from pathlib import Path

import jax
import numpy as np

from cljax import methods, models, train
from cljax.benchmarks import scenarios
from experiments import bench_limit
from experiments.tuned import run_tuned


def synthetic_cifar(items_per_task: int, num_tasks: int = 2, test_per_class: int = 8):
    """A seq-cifar10-like scenario of random uint8 images, `items_per_task` per task."""
    classes = 2 * num_tasks
    rng = np.random.default_rng(0)

    def make(per_class):
        y = np.repeat(np.arange(classes), per_class).astype(np.int32)
        return rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8), y

    arrays = (*make(max(1, items_per_task // 2)), *make(test_per_class))
    stats = scenarios.CIFAR10_STATS
    return scenarios.class_incremental(
        "synthetic-cifar10", arrays, num_tasks, scenarios.cifar_input(*stats), "resnet18"
    )


def peak_memory_bytes():
    """Peak bytes in use on the first device, or the process's peak RSS on a CPU."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_cifar(args):
    """DER++ on CIFAR-shaped data at each batch size, 1 seed and N seeds."""
    rows = []
    for batch in args.batch_sizes:
        scenario = synthetic_cifar(args.steps * batch)
        model = models.make(args.model, scenario.num_classes, args.dtype, nf=args.nf)
        method = methods.get("derpp").make(
            model=model,
            input_fn=scenario.input_fn,
            lr=0.03,
            buffer_size=500,
            minibatch_size=batch,
            alpha=0.2,
            beta=0.5,
        )
        for seeds in dict.fromkeys(((0,), tuple(range(args.seeds)))):  # once for --seeds 1
            config = train.RunConfig(
                epochs=1,
                batch_size=batch,
                seeds=seeds,
                progress=False,
                devices=args.devices,
                seed_devices=args.seed_devices,
                chunks_per_task=1,
            )
            t = train.run(method, scenario, config)["timing"]
            row = {
                "batch": batch,
                "seeds": len(seeds),
                "compile_s": t["compile_s"],
                "train_s": t["train_s"],
                "steps_per_s": t["steps_per_s"],
                "images_per_s": t["samples_per_s"],
                "peak_memory_mb": peak_memory_bytes() / 2**20,
                "total_s": t["total_s"],
            }
            rows.append(row)
            print(row, flush=True)
    return rows


def model_name(args):
    return f"reduced ResNet-18 (nf={args.nf})" if args.model == "resnet18" else args.model


def write_cifar_table(rows, args, where, device):
    lines = [
        f"# DER++ on CIFAR-shaped data, {model_name(args)}, {args.dtype}, on {where}",
        "",
        f"Command: `python -m experiments.bench --synthetic-cifar --steps {args.steps} "
        f"--seeds {args.seeds} --model {args.model} --nf {args.nf} --dtype {args.dtype} "
        f"--devices {args.devices} --seed-devices {args.seed_devices}`; "
        f"jax {jax.__version__}, "
        f"{jax.device_count()} device(s) ({device.device_kind}). Two tasks of {args.steps} steps "
        "each; images/s counts the current batch only (each DER++ step also forwards two "
        "replay minibatches of the same size). Peak memory: device peak on accelerators, "
        "process peak RSS on CPU (cumulative over the runs above it).",
        "",
        "| batch | seeds | compile s | train s | steps/s | images/s | peak MB | total s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['seeds']} | {r['compile_s']:.1f} | {r['train_s']:.2f} | "
            f"{r['steps_per_s']} | {r['images_per_s']} | {r['peak_memory_mb']:.0f} | "
            f"{r['total_s']:.1f} |"
        )
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--benchmark", default="seq-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--methods", nargs="+", default=["sgd", "er", "der", "derpp"])
    p.add_argument("--buffer-size", type=int, default=500)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None, help="override epochs per task")
    p.add_argument(
        "--steps-per-task",
        type=int,
        default=None,
        help="train each task for this many steps instead of its epochs (steps/s of slow "
        "methods without the full run; every task still runs)",
    )
    p.add_argument("--out-dir", default="experiments/results")
    p.add_argument("--synthetic-cifar", action="store_true", help="DER++ ResNet-18 throughput")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    p.add_argument("--steps", type=int, default=50, help="steps per task (synthetic CIFAR)")
    p.add_argument("--nf", type=int, default=64, help="ResNet width (synthetic CIFAR)")
    p.add_argument(
        "--model",
        default="resnet18",
        choices=models.MODELS,
        help="backbone of the synthetic CIFAR run (the DER paper's is resnet18)",
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--devices", type=int, default=None)
    p.add_argument(
        "--seed-devices",
        type=int,
        default=1,
        help="synthetic CIFAR: of --devices, how many split the seeds (the rest split batches)",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of methods not run now from the existing table (their times are "
        "from the run that wrote them)",
    )
    p.add_argument(
        "--limit",
        action="store_true",
        help="against the machine's limit: matmul GFLOP/s, FLOPs a step, 1 seed vs N vmapped "
        "vs N split over the cores, the README's command cold and warm (experiments/bench_limit.py)",
    )
    args = p.parse_args(argv)
    if args.limit:  # sets the host devices: before anything starts JAX's backend
        if args.methods == p.get_default("methods"):
            args.methods = ["derpp"]
        return bench_limit.main(args)

    device = jax.devices()[0]
    if device.platform == "cpu":
        where = f"cpu-{os.cpu_count()}cpu"
    else:
        where = device.device_kind.replace(" ", "-")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.synthetic_cifar:
        rows = bench_cifar(args)
        model = f"nf{args.nf}" if args.model == "resnet18" else args.model
        stem = out / f"bench-cifar-derpp-{where}-{args.dtype}-{model}"
        table = "\n".join(write_cifar_table(rows, args, where, device)) + "\n"
        stem.with_suffix(".md").write_text(table)
        stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        print(table)
        return rows

    scenario = scenarios.build(args.benchmark, args.data_dir)
    stem = out / f"bench-{args.benchmark}-{where}"
    rows = {}
    if args.merge and stem.with_suffix(".json").exists():
        kept = json.loads(stem.with_suffix(".json").read_text())
        rows = {k: v for k, v in kept.items() if k not in args.methods and str(args.seeds) in v}
    short = {"steps": args.steps_per_task} if args.steps_per_task else {}
    for name in args.methods:
        one = run_tuned(scenario, name, args.buffer_size, (0,), epochs=args.epochs, **short)
        many = run_tuned(
            scenario, name, args.buffer_size, range(args.seeds), epochs=args.epochs, **short
        )
        rows[name] = {"1": one["timing"], str(args.seeds): many["timing"]}
        rows[name]["steps_per_task"] = args.steps_per_task or "all"
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
        *(
            [
                f"Rows of {', '.join(args.methods)}: this invocation (`--methods ... --merge`); "
                "the others were kept from the run that wrote them before, on the same machine "
                "kind, each measured alone.",
                "",
            ]
            if args.merge
            else []
        ),
        "Steps a task: all (the tuned epochs), or the number of `--steps-per-task` a row was "
        "measured with (slow methods); the times are those of that run, steps/s compares.",
        "",
        f"| method | steps a task | compile s | train s (1 seed) | steps/s | samples/s | {n} "
        f"seeds: compile s | {n} seeds: train s | {n} seeds: total s | {n} x 1-seed total s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        one, many = r["1"], r[n]
        lines.append(
            f"| {name} | {r.get('steps_per_task', 'all')} | {one['compile_s']:.2f} | "
            f"{one['train_s']:.2f} | {one['steps_per_s']} | "
            f"{one['samples_per_s']} | {many['compile_s']:.2f} | {many['train_s']:.2f} | "
            f"{many['total_s']:.2f} | {args.seeds * one['total_s']:.2f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
