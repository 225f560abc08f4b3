"""The examples in examples/ run, on tiny settings."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from cljax import cli, methods
from tests.conftest import subprocess_env

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def test_own_loop_trains_with_the_derpp_step_and_with_the_buffer_alone(capsys):
    out = load("own_loop").main(["--steps", "30"])
    for way in ("cljax_step", "buffer_only"):
        assert len(out[way]) == 5 and all(0 <= a <= 100 for a in out[way])
        assert np.mean(out[way]) > 25  # better than forgetting all but the last task (20)
    assert "buffer 1500 seen" in capsys.readouterr().out  # 5 tasks x 30 steps x batch 10


def test_a_method_registered_from_outside_runs_in_the_driver_and_the_cli(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(methods, "_REGISTERED", dict(methods._REGISTERED))  # undone after
    own = load("own_method")
    assert methods.get("er_ace_plain") is own and "er_ace_plain" in methods.names()
    workdir = tmp_path / "run"
    args = ["--import", str(EXAMPLES / "own_method.py"), "--method", "er_ace_plain"]
    args += ["--seeds", "2"]
    args += ["--benchmark", "seq-digits", "--buffer-size", "200", "--no-progress"]
    assert cli.main([*args, "--set", "steps=5", "--workdir", str(workdir)]) == 0
    res = json.loads((workdir / "results.json").read_text())
    assert res["method"] == "er_ace_plain" and res["seeds"] == [0, 1]
    assert res["tuned"]["source"].startswith("example")  # its own TUNED table was read
    assert res["hparams"]["buffer_size"] == 200 and res["hparams"]["steps"] == 5
    capsys.readouterr()
    code = cli.main(["--import", "no_such_module_here", "--workdir", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        "error: --import no_such_module_here: ModuleNotFoundError: No module named "
        "'no_such_module_here'"
    ]


def test_the_mesh_example_splits_seeds_and_batches_over_four_host_devices():
    env = subprocess_env()  # no device count: the example asks for its own
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "mesh.py"), "--steps", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("4 devices")
    for split in ("seed_devices=2 (mesh seeds x data = 2 x 2)", "seed_devices=4 (mesh"):
        assert split in out.stdout
    diffs = [float(d) for d in re.findall(r"any seed and task: ([\d.]+) points", out.stdout)]
    assert len(diffs) == 2 and max(diffs) <= 1.0, out.stdout
