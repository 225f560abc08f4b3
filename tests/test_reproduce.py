"""The reproduction scripts' own arithmetic (their runs are benchmarks, never tests)."""

import argparse
import json

import pytest

from cljax import models
from experiments import reproduce_dyn_expand


def _row(seeds, class_il):
    return {"seeds": seeds, "final_average_accuracy": {"class-il": {"per_seed": class_il}}}


def test_pruning_cost_pairs_rows_seed_by_seed():
    rows = {
        "dyn_expand (masks + pruning)": _row([1, 2, 3], [74.0, 71.0, 50.0]),
        "dyn_expand (no masks)": _row([0, 1, 2], [99.0, 75.0, 73.0]),
        "er": _row([1, 2], [10.0, 10.0]),  # not a masked row: no line
        "dyn_expand (masks + pruning, sparsity 0.025)": _row([2], [72.0]),  # one common seed
    }
    text = reproduce_dyn_expand.pruning_cost(rows)
    # seeds 1 and 2 only (0 and 3 are in one row each): losses 1 and 2
    assert "- dyn_expand (masks + pruning): 1.50 +- 0.50 points" in text
    assert "over 2 seeds; per seed 1.00, 2.00)" in text
    assert "er:" not in text and "0.025" not in text
    assert reproduce_dyn_expand.pruning_cost({"er": rows["er"]}) == ""
    # rows of the classifier before issue 32 pair with their own row without masks
    old = reproduce_dyn_expand.OLD_CLASSIFIER
    rows = {
        f"dyn_expand (masks + pruning{old})": _row([0, 1], [70.0, 70.0]),
        f"dyn_expand (no masks{old})": _row([0, 1], [73.0, 71.0]),
        "dyn_expand (no masks)": _row([0, 1], [90.0, 90.0]),
    }
    text = reproduce_dyn_expand.pruning_cost(rows)
    assert f"- dyn_expand (masks + pruning{old}): 2.00 +- 1.00 points" in text


def test_header_names_the_backbone_and_its_command():
    args = argparse.Namespace(
        benchmark="seq-fashion-mnist", buffer_size=500, seeds=5, epochs=2, model="cnn-wide"
    )
    text = reproduce_dyn_expand.header(args)
    assert (
        "--epochs 2 --model cnn-wide`" in text
        and "Backbone `cnn-wide` (3x3 convs 64-128-256" in text
    )
    assert models.make("cnn-wide", 10).widths == (64, 128, 256)
    plain = reproduce_dyn_expand.header(argparse.Namespace(**{**vars(args), "model": "cnn"}))
    assert "--model" not in plain and "32-64-128" in plain


def test_tune_runs_a_grid_on_held_out_data_and_continues_where_it_stopped(tmp_path, capsys):
    from experiments import tune

    out = tmp_path / "grid"
    argv = ["--benchmark", "seq-digits", "--method", "sgd", "--seeds", "2", "--out", str(out)]
    argv += ["--grid", "lr=0.05,0.2", "steps=3"]
    tune.main(argv)
    points = json.loads(out.with_suffix(".json").read_text())
    assert set(points) == {"lr=0.05 steps=3", "lr=0.2 steps=3"}
    assert all(p["seeds"] == [0, 1] and 0 <= p["mean"] <= 100 for p in points.values())
    assert points["lr=0.2 steps=3"]["hparams"]["lr"] == 0.2
    md = out.with_suffix(".md").read_text()
    assert "validation grid" in md and "| 1 |" in md and "| 2 |" in md
    capsys.readouterr()
    tune.main(argv)  # the points in the json are not run again
    assert "[" not in capsys.readouterr().out.split("wrote")[0]
    with pytest.raises(SystemExit):
        tune.main(argv[:-2] + ["nosuch=1"])


def test_plot_compares_runs_from_tables_and_results_files(tmp_path, capsys):
    from pathlib import Path

    from experiments import plot

    table = Path(__file__).resolve().parents[1] / "experiments/results/der_mnist360.json"
    rows = json.loads(table.read_text())
    stream = dict(rows["mnist-360|der|500"])  # a stream run evaluated along the way
    stream["accuracy_over_time"] = {
        "steps": [10, 20, 30],
        "accuracy": [[10, 12], [30, 33], [60, 58]],
    }
    # a version-0 file (the table's rows predate version 1)
    (tmp_path / "stream.json").write_text(json.dumps(stream))
    table2 = json.loads(table.with_name("der_table2_mnist.json").read_text())
    (tmp_path / "seq.json").write_text(json.dumps(table2["seq-mnist|er|500"]))
    (tmp_path / "perm.json").write_text(json.dumps(table2["perm-mnist|er|500"]))  # 20 tasks
    out = tmp_path / "plots"
    files = [str(tmp_path / f) for f in ("stream.json", "seq.json", "perm.json")]
    assert plot.main([str(table), *files, "--out", str(out)]) == 0
    for name in ("compare", "forgetting", "over_time"):
        for fmt in ("png", "svg"):
            assert (out / f"{name}.{fmt}").stat().st_size > 1000, name
    labels = [label for label, _ in plot.collect([str(table)])]
    assert "mnist-360 der 500" in labels and len(labels) == len(rows)
    assert plot.main([str(tmp_path / "nothing.json")]) == 2
    assert "no results file at" in capsys.readouterr().err


def test_after_der_table_puts_each_row_beside_its_reference_and_paper():
    from cljax import methods
    from experiments import reproduce_after_der as after

    for row in after.ROWS:  # every row runs a method with settings its Config takes
        method, overrides = after.VARIANTS.get(row, (row, {}))
        methods.get(method).Config.build(overrides)
    assert set(after.REFERENCE_RUNS) == {row for row, _ in after.REFERENCE}
    stats = {"mean": 80.0, "std": 1.0}
    res = {
        "final_average_accuracy": {"class-il": stats, "task-il": {"mean": 99.0, "std": 0.1}},
        "seeds": [0, 1],
        "timing": {"train_s": 1.0, "total_s": 2.0},
    }
    text = after.table({"seq-mnist|cls_er|200": res, "seq-mnist|gdumb|500": res})
    # ours - reference (88.76) and ours - paper (89.54), the reference and paper columns
    assert "| cls_er | 200 | class-il | 80.00 +- 1.00 | 88.76 | -8.76 | 89.54 | -9.54 | 2 |" in text
    assert "| gdumb | 500 | task-il | 99.00 +- 0.10 |  |  |  |  | 2 |" in text
    with pytest.raises(SystemExit):
        after.main(["--rows", "nosuch"])


def test_vdv_reads_the_reference_logs_and_tables_both_side_by_side(tmp_path):
    """experiments/reproduce_vdv.py: a reference run's accuracy from main.py's last line and
    its wall time from `/usr/bin/time -v`; an unfinished log is no result; the table pairs
    the seeds both have."""
    from experiments import reproduce_vdv as vdv

    (tmp_path / "bir_class_s1.log").write_text(
        " - Context 5: 0.9839\n=> average accuracy over all 5 contexts: 0.9575\n\n"
    )
    (tmp_path / "bir_class_s1.time").write_text(
        "\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.5\n"
    )
    (tmp_path / "bir_class_s2.log").write_text(" - Context 1: 0.99\n")  # still running
    got = vdv.reference_from_logs(tmp_path, "bir", "class", 1)
    assert got == {"accuracy": pytest.approx(95.75), "wall_s": pytest.approx(3723.5)}
    assert vdv.reference_from_logs(tmp_path, "bir", "class", 2) is None
    assert vdv.reference_from_logs(tmp_path, "dgr_vae", "class", 1) is None
    results = {
        "class": {
            "bir": {
                "1": {"reference": got, "cljax": {"accuracy": 95.59, "wall_s": 500.0}},
                "2": {"cljax": {"accuracy": 93.1, "wall_s": 510.0}},  # no reference: left out
            }
        }
    }
    results["task"] = {
        "sgd": {"1": {"reference": {"accuracy": 85.2}, "cljax": {"accuracy": 90.8}}},
    }
    text = vdv.table(results, "alone")
    assert "| BI-R | 95.75 +- 0.00 | 95.59 +- 0.00 | -0.16 | 1 | 95.8/95.6 | 3724 / 500 |" in text
    assert "## class-incremental" in text and "Runs: alone" in text
    assert "## task-incremental" in text and "| None (Adam) | 85.20" in text
    assert "within 2 points of the reference: 1 of 2; further: None (Adam) task-IL (+5.60)" in text
