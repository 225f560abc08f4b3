"""Data parallelism and seeds split over devices: 8 fake CPU devices give the results of 1
(in a fresh process)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE, STDOUT

import numpy as np
import pytest

from cljax import train
from cljax.run import plan, sharding
from tests import multihost_check
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
# derpp: the buffer (reservoir from the global batch, replay gathers); dgr: a GAN step
# whose global batch is cut into n_critic chunks. sgd and er take a subset of derpp's path,
# mergan dgr's; each method costs two compiles on 8 fake devices.
METHODS = ("derpp", "dgr")


def test_eight_devices_equal_one_device():
    env = subprocess_env(host_devices=8)
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
    assert "derpp: 7 seeds padded on 4 devices, resumed on 3 == unsplit" in proc.stdout
    assert "dgr: 7 seeds padded on 4 devices, resumed == unsplit" in proc.stdout


def test_two_processes_as_two_hosts_equal_one_process(tmp_path):
    """The README's multi-host set-up, two processes on this machine: both join, train on
    one mesh, checkpoint mid-task into one work dir, resume, and end as one process does."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = []
    for pid in range(2):
        env = {
            **subprocess_env(),  # one device a process
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(pid),
        }
        cmd = [sys.executable, "-m", "tests.multihost_check", str(tmp_path)]
        procs.append(
            subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=PIPE, stderr=STDOUT, text=True)
        )
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]
    one = multihost_check.summary(
        train.run(
            multihost_check.make(), multihost_check.SC, train.RunConfig(**multihost_check.CONFIG)
        )
    )
    for pid in range(2):
        host = json.loads((tmp_path / f"host-{pid}.json").read_text())
        assert host["accuracy"] == one["accuracy"]
        np.testing.assert_allclose(host["sums"], one["sums"], rtol=1e-4, atol=1e-5)


def test_mesh_errors_are_clear():
    with pytest.raises(ValueError, match="choose 1..1"):
        sharding.make_mesh(4)
    assert sharding.make_mesh().shape == {"seeds": 1, "data": 1}
    with pytest.raises(ValueError, match="--seed-devices 2 must divide the 1 devices used"):
        sharding.make_mesh(1, seed_devices=2)
    with pytest.raises(ValueError, match="--seed-devices 0 must divide"):
        plan.mesh_shape(train.RunConfig(seeds=(0, 1), devices=1, seed_devices=0), 1)


def test_host_devices_respect_the_users_xla_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
    assert not sharding.host_devices(2)
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    assert not sharding.host_devices(1)  # one device: nothing to ask for
    assert sharding.host_devices(2)
    assert (
        os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=2"
    )
