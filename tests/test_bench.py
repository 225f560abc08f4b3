"""The benchmarks run (tiny sizes); their numbers are measured elsewhere, never asserted."""

import json

from experiments import bench


def test_synthetic_cifar_bench_runs_on_cpu(tmp_path):
    rows = bench.main(
        [
            "--synthetic-cifar",
            "--steps",
            "2",
            "--seeds",
            "1",
            "--model",
            "cnn",
            "--batch-sizes",
            "4",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert [(r["batch"], r["seeds"]) for r in rows] == [(4, 1)]  # --seeds 1: one run
    assert all(r["steps_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in rows)
    (md,) = tmp_path.glob("bench-cifar-*.md")
    assert "| 4 | 1 |" in md.read_text()


def test_method_bench_runs_on_digits(tmp_path):
    rows = bench.main(
        [
            "--benchmark",
            "seq-digits",
            "--methods",
            "er",
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert rows["er"]["2"]["steps"] == rows["er"]["1"]["steps"] > 0
    (js,) = tmp_path.glob("bench-seq-digits-*.json")
    assert json.loads(js.read_text())["er"]["1"]["train_s"] > 0


def test_step_flops_counts_the_forward_and_backward_matmuls():
    """XLA's count for an SGD step of the 64-100-100-10 MLP on digits: the forward matmuls
    (2 x batch x weights) and the backward's two more, plus the elementwise rest."""
    from cljax.benchmarks import scenarios
    from experiments import bench_limit
    from experiments.tuned import build_tuned

    scenario = scenarios.build("seq-digits")
    _, config = build_tuned(scenario, "sgd", 500)
    forward = 2 * config.batch_size * (64 * 100 + 100 * 100 + 100 * 10)
    flops = bench_limit.step_flops(scenario, "sgd", 500)
    assert 3 * forward - 2 * config.batch_size * 64 * 100 <= flops <= 4 * forward
    assert bench_limit.matmul_gflops(n=64, reps=1) > 0
