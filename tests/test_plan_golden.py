"""The run plan (schedules, step sizes, valid masks, chunks) equals the one recorded before
the driver was redesigned (`tests/plan_golden.py`, `tests/golden/plan/run_plans.json`)."""

import json
import os
from pathlib import Path

import pytest

from tests import plan_golden
from tests.conftest import SHARED_DATA

RECORDED = json.loads(plan_golden.PLAN.read_text())
DATA = Path(os.environ.get("CLJAX_DATA_DIR", SHARED_DATA))
HAS_MNIST = (DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file()
CASES = plan_golden.cases(DATA if HAS_MNIST else None)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_the_plan_is_the_recorded_one(name):
    if name not in CASES:
        pytest.skip(f"real MNIST files not found under {DATA} (set CLJAX_DATA_DIR to run this)")
    assert plan_golden.plan_of(*CASES[name]) == RECORDED[name]
