import numpy as np
import pytest

from cljax.outputs import metrics

NAN = np.nan
R = np.array([[90.0, NAN, NAN], [70.0, 80.0, NAN], [60.0, 85.0, 75.0]])


def test_metrics_on_hand_made_matrix():
    assert metrics.final_average_accuracy(R) == pytest.approx((60 + 85 + 75) / 3)
    assert metrics.average_incremental_accuracy(R) == pytest.approx((90 + 75 + 220 / 3) / 3)
    # forgetting: task0 best 90 -> 60 (30); task1 best 80 -> 85 (-5)
    assert metrics.forgetting(R) == pytest.approx((30 - 5) / 2)
    # BWT: (60-90) and (85-80)
    assert metrics.backward_transfer(R) == pytest.approx((-30 + 5) / 2)


def test_summarize_over_seeds_and_single_task():
    s = metrics.summarize(np.stack([R, R + 1.0]))
    assert s["final_average_accuracy"]["mean"] == pytest.approx(220 / 3 + 0.5)
    assert s["final_average_accuracy"]["std"] == pytest.approx(0.5)
    assert metrics.forgetting([[50.0]]) == 0.0


def test_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        metrics.final_average_accuracy(np.zeros((2, 3)))
