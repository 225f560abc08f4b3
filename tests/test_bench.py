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
