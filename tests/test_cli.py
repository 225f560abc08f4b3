"""The `cljax` command (`python -m experiments.run`): one real end-to-end run and every documented error."""

import json
import os
import subprocess
import sys

import jax
import pytest

import cljax
from cljax import cli
from cljax.outputs import results
from cljax.run import jit_cache
from tests.conftest import subprocess_env

FAST = ["--benchmark", "seq-digits", "--set", "n_epochs=1", "--no-progress"]


def test_end_to_end_run_writes_results_and_plot(tmp_path, capsys, monkeypatch):
    workdir = tmp_path / "run"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logs = ["--log", "csv", "tensorboard", "wandb"]
    args = ["--method", "derpp", "--seeds", "2", "--workdir", str(workdir), *logs]
    # Progress on (no --no-progress), but stderr is not a terminal here: no bar is drawn
    # into it, as into a log file, and the per-task lines are still printed.
    with_progress = [a for a in FAST if a != "--no-progress"]
    code = cli.main([*args, "--set", "dtype=bfloat16", *with_progress])
    out = capsys.readouterr()
    assert "step/s" not in out.err + out.out and "task 5/5" in out.err + out.out
    assert code == 0
    res = json.loads((workdir / "results.json").read_text())
    for key in (
        "method",
        "benchmark",
        "buffer_size",
        "seeds",
        "hparams",
        "accuracy",
        "final_average_accuracy",
        "forgetting",
        "timing",
    ):
        assert key in res
    assert res["seeds"] == [0, 1] and res["buffer_size"] == 500
    assert len(res["accuracy"]["class-il"]) == 2 and len(res["accuracy"]["task-il"][0]) == 5
    assert res["accuracy"]["class-il"][0][0][1] is None  # not evaluated before it is seen
    assert res["hparams"]["n_epochs"] == 1 and res["hparams"]["dtype"] == "bfloat16"
    assert res["class_il"] == "all"  # the reference's class-IL evaluation, by default
    assert res["devices"] == 1
    for k in ("total_s", "compile_s", "train_s", "steps", "steps_per_s"):
        assert res["timing"][k] is not None
    assert 0 <= res["final_average_accuracy"]["class-il"]["mean"] <= 100
    assert (workdir / "accuracy.png").stat().st_size > 1000
    check_logs(workdir, res)
    loaded = results.load(workdir)  # the typed view, with its provenance
    assert loaded.method == "derpp" and loaded.seeds == (0, 1) and loaded.finished
    assert loaded.schema_version == results.SCHEMA_VERSION and not results.validate(res)
    assert loaded.accuracy("class-il").shape == (2, 5, 5)
    assert loaded.final_average_accuracy["class-il"].mean == pytest.approx(
        res["final_average_accuracy"]["class-il"]["mean"]
    )
    prov = loaded.provenance
    assert prov["cljax"] == cljax.__version__ and prov["packages"]["jax"] == jax.__version__
    assert prov["device_count"] >= 1 and prov["backend"] == "cpu"
    assert any(f["path"].endswith("digits.csv.gz") for f in prov["data_files"])
    if prov["git"] is not None:  # run from a checkout
        assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    # A second run into the same workdir refuses; --resume finds the run complete.
    assert cli.main(["--workdir", str(workdir), *FAST]) == 2
    resume = ["--resume", "--seeds", "2", "--set", "dtype=bfloat16", "--workdir", str(workdir)]
    assert cli.main([*resume, *FAST]) == 0
    # Resuming with other settings is refused, and so is a damaged checkpoint.
    assert cli.main(["--resume", "--seeds", "3", "--workdir", str(workdir), *FAST]) == 2
    for f in (workdir / "checkpoints").rglob("*"):
        if f.is_file() and "meta" in f.parts:
            f.write_text("{broken")
    before = (workdir / "results.json").read_text()
    assert cli.main(["--resume", "--seeds", "2", "--workdir", str(workdir), *FAST]) == 2
    assert (workdir / "results.json").read_text() == before


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "ewc_offline"], "unknown method 'ewc_offline'"),
        (["--benchmark", "seq-foo"], "unknown benchmark 'seq-foo'"),
        (["--set", "lr=-1"], "derpp lr must be > 0, got -1.0"),
        (["--set", "lr"], "expects KEY=VALUE"),
        (["--set", "gamma=2"], "has no such setting"),
        (["--method", "sgd", "--set", "alpha=0.5"], "has no such setting"),
        (["--set", "minibatch_size=2.5"], "derpp minibatch_size must be an int, got 2.5"),
        (["--set", "minibatch_size=0"], "derpp minibatch_size must be >= 1, got 0"),
        (["--buffer-size", "0"], "must be positive"),
        (["--buffer-size", "5000"], "larger than the 1437 training items"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--set", "batch_size=400"], "larger than the 283 training items of seq-digits's"),
        (["--benchmark", "seq-mnist", "--data-dir", "/nonexistent/dir"], "does not exist"),
        (["--tasks", "3"], "cannot be split into 3"),
        (["--devices", "4"], "choose 1..1"),
        (["--set", "dtype=float16"], "run setting dtype must be one of float32, bfloat16"),
        (["--method", "dgr", "--set", "replay=maybe"], "expected true or false"),
        (
            ["--method", "dgr", "--set", "gan=vae"],
            "dgr gan must be one of mlp, mlp-wide, dc, mergan-dc, got 'vae'",
        ),
        (
            ["--method", "mergan", "--set", "variant=xx"],
            "mergan variant must be one of jr, ra, got 'xx'",
        ),
        (["--method", "mergan", "--set", "n_critic=3"], "must be a multiple of n_critic 3"),
        (["--method", "dgr", "--set", "ratio=-0.5"], "dgr ratio must be >= 0 and <= 1, got -0.5"),
        (
            ["--method", "dyn_expand", "--set", "milestones=0,5"],
            "dyn_expand milestones must be a tuple of integers > 0, got (0, 5)",
        ),
        (["--tasks", "3", "--base-classes", "5"], "leaves 5 of 10 classes"),
        (["--base-classes", "4"], "needs the number of tasks"),
        (["--benchmark", "perm-mnist", "--base-classes", "4"], "domain-incremental"),
        (["--method", "ewc_on", "--stream", "fuzzy"], "'ewc_on' needs task boundaries"),
        (["--stream", "fuzzy", "--set", "n_epochs=2"], "a stream, seen once"),
        (["--stream", "fuzzy", "--fuzziness", "10000"], "at most half the"),
        (["--fuzziness", "3"], "--fuzziness needs --stream fuzzy"),
        (
            ["--method", "dyn_expand", "--set", "first_milestones=x"],
            "dyn_expand first_milestones must be a tuple of integers",
        ),
    ],
)
def test_errors_are_one_line_exit_2_nothing_written(args, message, tmp_path, capsys):
    workdir = tmp_path / "out"
    code = cli.main([*FAST, "--workdir", str(workdir), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert not workdir.exists()


def test_task_il_only_method_on_a_domain_il_benchmark_is_refused_before_training(
    mnist_dir, tmp_path, capsys
):
    workdir = tmp_path / "out"
    args = ["--method", "pnn", "--benchmark", "perm-mnist", "--data-dir", str(mnist_dir)]
    code = cli.main([*args, "--workdir", str(workdir), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "'pnn' can only be scored in task-il" in err and len(err.splitlines()) == 1, err
    assert not workdir.exists()


def test_bad_multi_host_environment_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    workdir = tmp_path / "out"
    assert cli.main([*FAST, "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: JAX_NUM_PROCESSES='two': expected a non-negative integer"
    assert not workdir.exists()


def test_missing_mnist_files_error(tmp_path, capsys):
    code = cli.main(
        [
            "--benchmark",
            "seq-mnist",
            "--data-dir",
            str(tmp_path),
            "--workdir",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "missing train-images-idx3-ubyte.gz of mnist" in err
    assert "--download" in err


def test_module_entry_point_and_argparse_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run", "--seeds", "two"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "invalid int value" in proc.stderr


def test_dyn_expand_run_reports_parameters_per_task(tmp_path):
    workdir = tmp_path / "dyn"
    code = cli.main(
        [
            "--method",
            "dyn_expand",
            "--seeds",
            "1",
            "--workdir",
            str(workdir),
            "--set",
            "retrain_epochs=2",
            "--set",
            "warmup_epochs=1",
            "--set",
            "retrain_milestones=1",
            "--set",
            "last_batch=fill",  # no second program for the short batch (test_train has it)
            "--tasks",
            "2",
            *FAST,
        ]
    )
    assert code == 0
    res = json.loads((workdir / "results.json").read_text())
    assert res["hparams"]["model"] == "cnn"
    assert (res["hparams"]["warmup_epochs"], res["hparams"]["retrain_milestones"]) == (1, [1])
    assert len(res["per_task"]) == 2 and res["per_task"][-1][0]["extractors"] == 2
    assert cli.main(["--method", "dyn_expand", "--set", "masks=maybe", *FAST]) == 2


def test_list_hparams_prints_every_field_and_the_tuned_row(capsys):
    assert cli.main(["--method", "der", "--benchmark", "seq-mnist", "--list-hparams"]) == 0
    out = capsys.readouterr().out
    from cljax.methods import der

    for name in der.Config.names():
        assert f"\n  {name} (" in out
    assert "alpha (float, default 1.0) [>= 0]: weight of the logit MSE" in out
    assert "batch_size (int, default 32)" in out  # the run settings too
    assert "tuned for seq-mnist, buffer 500 (the DER paper's appendix" in out


def test_untuned_run_says_so_on_stderr_and_in_results(tmp_path, capsys, monkeypatch):
    from cljax import tuned

    monkeypatch.setattr(tuned, "table", lambda method: {})
    workdir = tmp_path / "untuned"
    args = ["--method", "sgd", "--seeds", "1", "--workdir", str(workdir), *FAST]
    assert cli.main(args) == 0
    assert "untuned defaults" in capsys.readouterr().err
    res = json.loads((workdir / "results.json").read_text())
    assert res["tuned"] == "untuned defaults" and res["hparams"]["batch_size"] == 32


def test_console_script_is_declared():
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["cljax"] == "cljax.cli:entry"


def test_compile_cache_folder_is_chosen_checked_and_yields_to_the_users(tmp_path, monkeypatch):
    keys = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
        "jax_compilation_cache_max_size",
    )
    before = {k: jax.config.values[k] for k in keys}
    try:
        assert jit_cache.enable(tmp_path / "c") is None  # the suite's folder is set by env
        assert jax.config.values["jax_compilation_cache_dir"] == before[keys[0]]
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
        monkeypatch.setenv("CLJAX_CACHE_DIR", str(tmp_path / "home"))
        assert jit_cache.default_folder() == tmp_path / "home" / "jit"
        (tmp_path / "file").write_text("x")
        warning = jit_cache.enable(tmp_path / "file" / "jit")
        assert warning.startswith(f"compile cache off: cannot write {tmp_path / 'file' / 'jit'}")
        assert jit_cache.enable() is None
        assert jax.config.values["jax_compilation_cache_dir"] == str(tmp_path / "home" / "jit")
        assert jax.config.values[keys[1]] == 0.0
    finally:
        for k, v in before.items():
            jax.config.update(k, v)


def test_a_fresh_command_splits_the_seeds_over_the_cores(tmp_path):
    """On a CPU the command makes one XLA host device a core (at most one a seed) and
    splits the seeds over them: 3 seeds on 2 cores run padded to 4, 2 a device; results
    hold the 3 real seeds and say how they ran. Subprocesses keep the user's XLA_FLAGS."""
    cores = len(os.sched_getaffinity(0))
    env = subprocess_env()  # no device count: the command sets its own
    cmd = [sys.executable, "-m", "cljax.cli", "--seeds", "3", "--tasks", "2", *FAST]
    proc = subprocess.run(
        [*cmd, "--workdir", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["seeds"] == [0, 1, 2] and len(res["accuracy"]["class-il"]) == 3
    assert res["seed_devices"] == res["devices"] == min(3, cores)
    assert len(res["final_average_accuracy"]["class-il"]["per_seed"]) == 3


def _events(folder):
    """Every scalar in the TensorBoard event files under `folder`, read with tensorboardX's
    Event protobuf from the TFRecord framing (length, crc, payload, crc): `{tag: [(step,
    value)]}`, and the text summaries' tags."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars, texts = {}, set()
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
                else:
                    texts.add(v.tag)
    return scalars, texts


def _wandb_records(path):
    """`(history rows, summary, config)` of a W&B run file: LevelDB-log framing (a 7-byte
    file header, then 32 KiB blocks of records, each a 7-byte header: crc, length, kind
    1 full / 2 first / 3 middle / 4 last) around wandb's `Record` protobufs, values JSON."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, at, part, out = path.read_bytes(), 7, b"", []
    while at < len(data):
        left = 32768 - at % 32768
        crc, length, kind = struct.unpack("<IHB", data[at : at + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # a block's zero padding
            at += left
            continue
        part += data[at + 7 : at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            out.append(wandb_internal_pb2.Record.FromString(part))
            part = b""
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731
    items = lambda update: {key(i): json.loads(i.value_json) for i in update}  # noqa: E731
    history, summary, config = [], {}, {}
    for record in out:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(items(record.history.item))
        elif kind == "summary":
            summary.update(items(record.summary.update))
        elif kind == "run":
            config.update(items(record.run.config.update))
        elif kind == "config":
            config.update(items(record.config.update))
    return history, summary, config


def check_logs(workdir, res):
    """The three loggers' files of a 2-seed, 5-task DER++ run on seq-digits."""
    import csv

    rows = lambda name: list(csv.DictReader((workdir / "logs" / name).open()))
    losses = rows("losses.csv")
    assert {"task", "chunk", "step", "seed", "loss"} <= set(losses[0])
    assert {r["seed"] for r in losses} == {"0", "1"} and {r["task"] for r in losses} == set("12345")
    assert int(losses[-1]["step"]) == res["timing"]["steps"]
    acc = rows("accuracy.csv")
    assert list(acc[0]) == ["setting", "after_task", "seed", "on_task", "accuracy"]
    assert len(acc) == 2 * 2 * 15  # 2 settings x 2 seeds x (1 + 2 + ... + 5) tasks seen
    last = [r for r in acc if r["setting"] == "class-il" and r["after_task"] == "5"]
    per_seed = [sum(float(r["accuracy"]) for r in last if r["seed"] == s) / 5 for s in "01"]
    assert per_seed == pytest.approx(res["final_average_accuracy"]["class-il"]["per_seed"])
    final = {(r["setting"], r["metric"]): float(r["mean"]) for r in rows("final.csv")}
    assert final[("class-il", "forgetting")] == pytest.approx(res["forgetting"]["class-il"]["mean"])
    assert {r["key"] for r in rows("hparams.csv")} >= {"alpha", "beta", "lr", "batch_size"}
    assert {r["key"] for r in rows("timing.csv")} >= {"train_s", "compile_s", "total_s"}

    scalars, texts = _events(workdir / "tensorboard")
    assert [s for s, _ in scalars["accuracy/class-il/seen"]] == [1, 2, 3, 4, 5]
    assert scalars["accuracy/class-il/seen"][-1][1] == pytest.approx(
        res["final_average_accuracy"]["class-il"]["mean"], abs=1e-3
    )
    assert len(scalars["accuracy/task-il/task_1"]) == 5 and "loss/loss/seed_1" in scalars
    assert scalars["loss/loss"][-1][0] == res["timing"]["steps"]
    assert "final/forgetting/class-il" in scalars and "timing/train_s" in scalars
    assert any(t.startswith("hparams") for t in texts)

    runs = list((workdir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((workdir / "wandb").iterdir())
    # The offline run's record file (what `wandb sync` uploads), read with wandb's own
    # Record protobuf: the logged rows, the summary and the config, with their values.
    (records,) = runs[0].glob("run-*.wandb")
    history, summary, config = _wandb_records(records)
    seen = [r["accuracy/class-il/seen"] for r in history if "accuracy/class-il/seen" in r]
    assert len(seen) == 5 and seen[-1] == pytest.approx(
        res["final_average_accuracy"]["class-il"]["mean"], abs=1e-3
    )
    losses = [r for r in history if "loss/loss" in r]
    assert losses[-1]["step"] == res["timing"]["steps"] and "loss/loss/seed_1" in losses[-1]
    assert "accuracy/task-il/task_5" in history[-1]
    for metric in ("final_average_accuracy", "forgetting"):
        for setting in ("class-il", "task-il"):
            want = res[metric][setting]["mean"]
            assert summary[f"final/{metric}/{setting}"] == pytest.approx(want)
    assert summary["timing/train_s"] == pytest.approx(res["timing"]["train_s"])
    assert config["method"] == "derpp" and config["alpha"] == res["hparams"]["alpha"]


@pytest.mark.parametrize(
    "log,env,message",
    [
        (["nosuch"], {}, "unknown logger 'nosuch'; choose from csv, tensorboard, wandb"),
        (["wandb"], {"WANDB_MODE": "online"}, "--log wandb: not logged in to W&B"),
        (["tensorboard"], {"hide": "tensorboardX"}, "--log tensorboard needs the tensorboardX"),
    ],
)
def test_a_logger_that_cannot_start_stops_the_run_before_it_begins(
    tmp_path, capsys, monkeypatch, log, env, message
):
    from cljax.outputs import loggers

    hidden = env.pop("hide", None)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(loggers, "_check_wandb_login", _not_logged_in(loggers._check_wandb_login))
    if hidden:  # as if not installed: importing it raises ImportError
        monkeypatch.setitem(sys.modules, hidden, None)
    workdir = tmp_path / "run"
    code = cli.main([*FAST, "--workdir", str(workdir), "--log", *log])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (workdir / "results.json").exists() and not (workdir / "logs").exists()


def _not_logged_in(check):
    """W&B's login check with no key found (whatever this machine's ~/.netrc says)."""

    class NoKey:
        class api:
            api_key = None

    return lambda wandb: check(NoKey)
