"""The reproduction scripts' own arithmetic (their runs are benchmarks, never tests)."""

import argparse

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
