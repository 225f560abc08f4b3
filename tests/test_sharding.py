"""Data parallelism: 8 fake CPU devices give the results of 1 (in a fresh process)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cljax import sharding

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("sgd", "er", "derpp", "dgr", "mergan")


def test_eight_devices_equal_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.multidevice_check", *METHODS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    for name in METHODS:
        assert f"{name}: 1 device == 8 devices" in proc.stdout


def test_mesh_errors_are_clear():
    with pytest.raises(ValueError, match="choose 1..1"):
        sharding.make_mesh(4)
    assert sharding.make_mesh().shape == {"data": 1}
