"""Training speed against the machine's own limit, in one run (`bench.py --limit`).

    python -m experiments.bench --limit --benchmark seq-mnist --data-dir ../shared/data \
        --methods derpp er --seeds 5

Measures, in this order and alone on the machine:
1. the sustained float32 matmul rate through XLA (2048 x 2048 x 2048, best of 5) on one
   core (a subprocess pinned to core 0) and on all cores (this process);
2. each method's training FLOPs a step, from XLA's cost analysis of its compiled
   single-seed step at the tuned batch size;
3. each method's training time (`train_s`: compiles and evaluation excluded) for one
   seed, for N seeds vmapped on one device, and for N seeds split over the cores as
   XLA host devices (`seed_devices`, the `cljax` command's default on a CPU), with
   one seed's achieved GFLOP/s as a fraction of one core's matmul rate and N seeds'
   train time as a fraction of N one-seed runs';
4. the README's 5-seed DER++ command (`cljax --method derpp --benchmark seq-mnist
   --buffer-size 500 --seeds 5`) run twice from a fresh compilation cache, its wall
   time split into compile, train, evaluation, the rest of the driver (checkpoints,
   placing data) and what lies outside the driver (imports, loading the data, the
   plot).
Writes `experiments/results/bench-limit-BENCHMARK-PLATFORM.{md,json}`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MATMUL_N = 2048


def matmul_gflops(n: int = MATMUL_N, reps: int = 5) -> float:
    """Best of `reps` timed float32 `n x n @ n x n` matmuls through XLA, in GFLOP/s."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_core_gflops() -> float:
    """`matmul_gflops` in a fresh process pinned to core 0, with one XLA device."""
    code = "from experiments.bench_limit import matmul_gflops; print(matmul_gflops())"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    return float(out.stdout.split()[-1])


def step_flops(scenario, name: str, buffer_size: int) -> float:
    """XLA's count of the floating-point operations of one single-seed training step."""
    import jax
    import jax.numpy as jnp

    from cljax import train
    from experiments.tuned import build_tuned

    method, config = build_tuned(scenario, name, buffer_size)
    x, y = scenario.train(0)
    state = method.init(jax.random.key(0), jnp.asarray(x[:1]))
    if method.begin_task is not None:
        state = method.begin_task(state, train.task_info(scenario, config, 0), jax.random.key(1))
    b = config.batch_size
    batch = {"x": jnp.asarray(x[:b]), "y": jnp.asarray(y[:b])}
    compiled = jax.jit(method.train_step).lower(state, batch, jax.random.key(2)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def readme_command(data_dir: str, seeds: int = 5) -> list[dict]:
    """The README's DER++ command run twice from a fresh compilation cache: per run, its
    wall time and the driver's timing."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in ("first (cold cache)", "second (warm cache)"):
            workdir = Path(tmp) / f"run-{len(rows)}"
            cmd = [
                sys.executable,
                "-m",
                "cljax.cli",
                *("--method", "derpp", "--benchmark", "seq-mnist", "--buffer-size", "500"),
                *("--seeds", str(seeds), "--data-dir", data_dir, "--no-progress"),
                *("--workdir", str(workdir), "--compile-cache", str(Path(tmp) / "jit")),
            ]
            env = {
                k: v
                for k, v in os.environ.items()
                if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")
            }
            start = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            wall = time.perf_counter() - start
            t = json.loads((workdir / "results.json").read_text())["timing"]
            driver = t["total_s"]
            rows.append(
                {
                    "run": attempt,
                    "wall_s": wall,
                    "compile_s": t["compile_s"],
                    "train_s": t["train_s"],
                    "eval_s": t["eval_s"],
                    "driver_rest_s": driver - t["compile_s"] - t["train_s"] - t["eval_s"],
                    "outside_driver_s": wall - driver,
                }
            )
    return rows


def run(args) -> dict:
    """Every measurement of the module docstring; returns them (also written)."""
    from cljax.run import sharding

    cores = len(os.sched_getaffinity(0))
    sharding.host_devices(cores)  # before JAX starts its backend
    import jax

    from cljax.benchmarks import scenarios
    from experiments.tuned import run_tuned

    one_core = one_core_gflops()
    all_cores = matmul_gflops()
    print(f"matmul: one core {one_core:.1f} GFLOP/s, {cores} cores {all_cores:.1f}", flush=True)
    scenario = scenarios.build(args.benchmark, args.data_dir)
    n, k = args.seeds, min(args.seeds, cores)
    rows = {}
    for name in args.methods:
        flops = step_flops(scenario, name, args.buffer_size)
        runs = {
            "1 seed": dict(seeds=(0,), devices=1),
            f"{n} seeds vmapped": dict(seeds=range(n), devices=1),
            f"{n} seeds over {k} devices": dict(seeds=range(n), devices=k, seed_devices=k),
        }
        timing = {}
        for label, kw in runs.items():
            seeds = kw.pop("seeds")
            timing[label] = run_tuned(scenario, name, args.buffer_size, seeds, **kw)["timing"]
        one = timing["1 seed"]
        rate = flops * one["steps"] / one["train_s"] / 1e9
        rows[name] = {
            "flops_per_step": flops,
            "timing": timing,
            "one_seed_gflops": rate,
            "fraction_of_one_core": rate / one_core,
            "vmapped_over_separate": timing[f"{n} seeds vmapped"]["train_s"] / (n * one["train_s"]),
            "split_over_separate": timing[f"{n} seeds over {k} devices"]["train_s"]
            / (n * one["train_s"]),
        }
        print(name, {k: v for k, v in rows[name].items() if k != "timing"}, flush=True)
    readme = readme_command(args.data_dir) if args.benchmark == "seq-mnist" else []
    device = jax.devices()[0]
    return {
        "machine": f"{platform.machine()}, {cores} cores, {_cpu_model()}",
        "jax": jax.__version__,
        "platform": device.platform,
        "benchmark": args.benchmark,
        "buffer_size": args.buffer_size,
        "seeds": n,
        "seed_devices": k,
        "matmul_gflops": {"one_core": one_core, "all_cores": all_cores, "n": MATMUL_N},
        "methods": rows,
        "readme_command": readme,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def table(r: dict) -> str:
    n, k = r["seeds"], r["seed_devices"]
    m = r["matmul_gflops"]
    lines = [
        f"# Training speed against the machine's limit: {r['benchmark']}, buffer {r['buffer_size']}",
        "",
        f"Command: `python -m experiments.bench --limit --benchmark {r['benchmark']} "
        f"--seeds {n} --methods {' '.join(r['methods'])}`, alone on {r['machine']}; jax "
        f"{r['jax']} ({r['platform']}).",
        "",
        f"Matmul limit (float32 {m['n']}^3 through XLA, best of 5): one core "
        f"{m['one_core']:.1f} GFLOP/s, all cores {m['all_cores']:.1f} GFLOP/s.",
        "",
        "Train s: the compiled chunks alone (compiles and evaluation excluded). FLOPs a step: "
        "XLA's cost analysis of one seed's compiled step at the tuned batch size. "
        f"Ratios: N seeds' train s over {n} one-seed runs' ({n} x the 1-seed train s).",
        "",
        f"| method | GFLOP a step | 1 seed: train s | steps/s | GFLOP/s | of one core | "
        f"{n} vmapped: train s | ratio | {n} over {k} devices: train s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in r["methods"].items():
        t = row["timing"]
        one, vm, sp = t["1 seed"], t[f"{n} seeds vmapped"], t[f"{n} seeds over {k} devices"]
        lines.append(
            f"| {name} | {row['flops_per_step'] / 1e9:.4f} | {one['train_s']:.2f} | "
            f"{one['steps_per_s']} | {row['one_seed_gflops']:.1f} | "
            f"{row['fraction_of_one_core']:.0%} | {vm['train_s']:.2f} | "
            f"{row['vmapped_over_separate']:.2f} | {sp['train_s']:.2f} | "
            f"{row['split_over_separate']:.2f} |"
        )
    if r["readme_command"]:
        lines += [
            "",
            "The README's command, `cljax --method derpp --benchmark seq-mnist --buffer-size "
            "500 --seeds 5` (seeds over the cores, its default), twice from a fresh "
            "compilation cache; seconds:",
            "",
            "| run | wall | compile | train | evaluation | rest of the driver | outside the "
            "driver (imports, data, plot) |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["readme_command"]:
            lines.append(
                f"| {row['run']} | {row['wall_s']:.1f} | {row['compile_s']:.1f} | "
                f"{row['train_s']:.1f} | {row['eval_s']:.1f} | {row['driver_rest_s']:.1f} | "
                f"{row['outside_driver_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(args) -> dict:
    r = run(args)
    import jax

    device = jax.devices()[0]
    where = f"cpu-{os.cpu_count()}cpu" if device.platform == "cpu" else device.device_kind
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench-limit-{args.benchmark}-{where}"
    stem.with_suffix(".json").write_text(json.dumps(r, indent=1) + "\n")
    stem.with_suffix(".md").write_text(table(r))
    print(table(r))
    return r
