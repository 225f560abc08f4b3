"""Faults a user of a shared cluster meets, through the `cljax` command: a diverging run, two
runs in one workdir, workdir problems, a failed checkpoint write, SIGTERM, and SIGKILL at
random points (each resumed to the result of a run that never stopped)."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cljax import cli
from cljax.run import checkpoint_io as ckpt_lib
from cljax.run import workdir

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--benchmark", "seq-digits", "--seeds", "1", "--set", "n_epochs=1", "--no-progress"]


def one_line_error(capsys, code, want_code, message):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == want_code
    lines = [line for line in err if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not any("Traceback" in line for line in err)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """results.json of the run that never stops."""
    path = tmp_path_factory.mktemp("reference")
    assert cli.main([*RUN, "--workdir", str(path)]) == 0
    return json.loads((path / "results.json").read_text())


def test_divergence_exits_3_naming_method_task_and_seeds(tmp_path, capsys):
    code = cli.main([*RUN, "--set", "lr=1e6", "--workdir", str(tmp_path / "w")])
    one_line_error(
        capsys, code, 3, "derpp diverged in task 1 (non-finite loss or parameters: seed 0"
    )
    assert not (tmp_path / "w" / "results.json").exists()
    assert not (tmp_path / "w" / workdir.LOCK).exists()  # released


def test_a_second_run_into_a_held_workdir_is_refused(tmp_path, capsys):
    with workdir.Lock(tmp_path / "w"):
        code = cli.main([*RUN, "--workdir", str(tmp_path / "w")])
    one_line_error(capsys, code, 2, f"is in use by pid {os.getpid()} on ")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == []  # nothing written


def test_workdir_under_a_file_or_without_room_is_refused_up_front(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    code = cli.main([*RUN, "--workdir", str(tmp_path / "file" / "run")])
    one_line_error(capsys, code, 2, "is a file, not a folder")
    usage = workdir.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(workdir.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    code = cli.main([*RUN, "--workdir", str(tmp_path / "full")])
    one_line_error(capsys, code, 2, "0 MiB free, a checkpoint needs about")
    assert not (tmp_path / "full").exists()


def test_a_failed_checkpoint_write_stops_cleanly_and_resumes(
    tmp_path, capsys, monkeypatch, reference
):
    """The disk fills after task 1's checkpoint: exit 1 with one line, task 1's checkpoint
    kept, no results.json; with room again, --resume ends as the run that never stopped."""
    save, calls = ckpt_lib.save, []

    def failing(*args, **kw):
        calls.append(args[1])
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(*args, **kw)

    monkeypatch.setattr(ckpt_lib, "save", failing)
    code = cli.main([*RUN, "--workdir", str(tmp_path)])
    one_line_error(capsys, code, 1, "could not write the checkpoint of task 2")
    assert ckpt_lib.manager(tmp_path).all_steps() == [ckpt_lib.step_of(0)]
    assert not (tmp_path / "results.json").exists()
    monkeypatch.setattr(ckpt_lib, "save", save)
    assert cli.main([*RUN, "--workdir", str(tmp_path), "--resume"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["accuracy"] == reference["accuracy"]


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, capsys, reference):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / workdir.LOCK).write_text(
        json.dumps({"pid": gone.pid, "host": os.uname().nodename, "started": time.time()})
    )
    (tmp_path / "checkpoints").mkdir()  # an interrupted run's folder
    assert cli.main([*RUN, "--workdir", str(tmp_path), "--resume"]) == 0
    assert f"taking over {tmp_path / workdir.LOCK}: its run (pid {gone.pid}" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / workdir.LOCK).exists()
    assert json.loads((tmp_path / "results.json").read_text())["accuracy"] == reference["accuracy"]


def _start(args, tmp_path):
    cmd = [sys.executable, "-m", "cljax.cli", *RUN, "--workdir", str(tmp_path / "w"), *args]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for(proc, text, timeout=120):
    """Reads the process's output until a line holds `text`; returns what was read."""
    seen, end = [], time.time() + timeout
    while time.time() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never printed:\n{''.join(seen)}")


def _wait_for_checkpoints(proc, folder: Path, n: int, timeout=120):
    """Returns once `n` checkpoints that were not in `folder` at the call have been written
    (the manager keeps only the last two: new names are gathered as they appear)."""
    before, new, end = set(os.listdir(folder)), set(), time.time() + timeout
    while time.time() < end and proc.poll() is None:
        new |= {d for d in os.listdir(folder) if d.isdigit()} - before
        if len(new) >= n:
            return
        time.sleep(0.005)
    raise AssertionError(f"{n} new checkpoints never appeared (exit code {proc.poll()})")


def test_sigterm_then_sigkill_at_random_points_resume_to_the_same_result(tmp_path, reference):
    """As a preempted job: SIGTERM after the first task (exit 143, a checkpoint at the next
    chunk), then three SIGKILLs at seeded random moments of resumed runs that checkpoint
    after every chunk (a kill may land mid-write), then a last resume: the accuracy matrices
    equal those of the run that never stopped."""
    proc = _start(["--checkpoint-minutes", "10"], tmp_path)
    _wait_for(proc, "task 1/5")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out
    assert "SIGTERM: stopping after the current chunk" in out and "the checkpoint is written" in out
    rng = random.Random(0)
    for _ in range(3):
        proc = _start(["--resume", "--checkpoint-minutes", "0"], tmp_path)
        # after 1-4 new checkpoints and a random fraction of the next chunk (or save): a
        # kill point set by the run's progress, not the clock, so that no resumed run can
        # finish first however fast the machine (a task is 20 chunks, the run 100)
        _wait_for_checkpoints(proc, tmp_path / "w" / "checkpoints", rng.randint(1, 4))
        time.sleep(rng.uniform(0.0, 0.2))
        proc.kill()
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished before it
    proc = _start(["--resume"], tmp_path)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert results["accuracy"] == reference["accuracy"]
