"""The tables' rows (`experiments/rows.py`) and the scripts' resume paths, on tiny fake rows:
nothing trains."""

import json
import os
import platform

import jax
import numpy as np
import pytest

from cljax.outputs import metrics
from experiments import plot, reproduce_der, reproduce_dyn_expand, reproduce_generative, tune
from experiments import rows as table_rows


def _results(
    seeds, tasks=2, hparams=None, method="er", benchmark="seq-mnist", settings=("class-il",)
):
    """A finished run's results on `seeds` as `report.merge_seeds` takes them: seed s scores
    60 + s on every task it has seen."""
    seeds = list(seeds)
    acc = [np.tril(np.full((tasks, tasks), 60.0 + s)).tolist() for s in seeds]
    summary = metrics.summarize(acc)
    n = len(seeds)
    return {
        "method": method,
        "benchmark": benchmark,
        "hparams": {"lr": 0.1} if hparams is None else hparams,
        "settings": list(settings),
        "seeds": seeds,
        "accuracy": {s: acc for s in settings},
        "final_average_accuracy": {s: summary["final_average_accuracy"] for s in settings},
        "A_n": {s: {"mean": [60.0] * tasks, "std": [0.0] * tasks} for s in settings},
        "timing": {
            "train_s": 1.0 * n,
            "total_s": 2.0 * n,
            "steps": 10 * n,
            "steps_per_s": 10.0,
            "samples_per_s": 100.0,
        },
        "final_train_loss": [0.5] * tasks,
    }


class Runs:
    """A `run(seeds)` that records the seeds it is asked for."""

    def __init__(self, **kwargs):
        self.calls, self.kwargs = [], kwargs

    def __call__(self, seeds):
        self.calls.append(tuple(seeds))
        return _results(seeds, **self.kwargs)


def test_missing_seeds():
    row = _results([0, 2])
    assert table_rows.missing_seeds(row, range(4)) == (1, 3)
    assert table_rows.missing_seeds(row, range(2)) == (1,)
    assert table_rows.missing_seeds(None, range(3)) == (0, 1, 2)
    assert table_rows.missing_seeds(row, range(3), same=False) == (0, 1, 2)
    assert table_rows.missing_seeds(row, [2, 0]) == ()


def test_complete_runs_only_the_missing_seeds_and_joins_them():
    run = Runs()
    row = table_rows.complete("r", _results([0, 1]), range(3), run)
    assert run.calls == [(2,)]
    assert row["seeds"] == [0, 1, 2]
    assert row["final_average_accuracy"]["class-il"]["per_seed"] == [60.0, 61.0, 62.0]
    assert row["timing"]["total_s"] == 6.0
    assert table_rows.complete("r", row, range(3), run) is None  # nothing missing, nothing ran
    assert run.calls == [(2,)]
    # other settings: every seed again, the row replaced
    row = table_rows.complete("r", _results([0, 1]), range(2), run, same=False)
    assert run.calls[-1] == (0, 1) and row["timing"]["total_s"] == 4.0


def test_complete_reruns_a_row_whole_only_when_asked(capsys):
    run = Runs(hparams={"lr": 0.2})  # the row ran lr 0.1: the seeds cannot be joined
    with pytest.raises(ValueError, match="hparams differs"):
        table_rows.complete("r", _results([0]), range(2), run)
    run.calls.clear()
    row = table_rows.complete("r", _results([0]), range(2), run, rerun_whole=True)
    assert run.calls == [(1,), (0, 1)] and row["seeds"] == [0, 1]
    assert "r: cannot merge results: hparams differs" in capsys.readouterr().out


def test_merge_compares_settings_as_the_table_holds_them():
    # a tuple setting comes back from the JSON file as a list (dyn_expand's milestones)
    row = table_rows.as_json(_results([0], hparams={"milestones": (3, 6)}))
    res = _results([1], hparams={"milestones": (3, 6)})
    merged = table_rows.merge(row, res)
    assert merged["seeds"] == [0, 1] and merged["hparams"] == {"milestones": [3, 6]}
    assert table_rows.merge(None, res) is res


def test_save_keeps_the_rows_another_invocation_wrote(tmp_path):
    path = tmp_path / "t.json"
    assert table_rows.load(path) == {}
    mine = table_rows.save(path, {"a": 1})
    path.write_text(json.dumps({**mine, "b": 2}))  # another invocation wrote row b since
    assert table_rows.save(path, {"a": 3}) == {"a": 3, "b": 2} == table_rows.load(path)
    # the rows given are written as they are: the file's other rows are not read
    assert table_rows.save(path, {"c": 4}, {"a": 5}) == {"a": 5, "c": 4} == table_rows.load(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


def test_write_table_is_whole_or_not_at_all(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plot, "for_table", drawn.append)
    md = tmp_path / "t.md"
    table_rows.write_table(md, "| a |\n", tmp_path / "t.json")
    assert md.read_text() == "| a |\n" and drawn == [tmp_path / "t.json"]
    with pytest.raises(TypeError):  # fails while writing: the old table stays, no stray file
        table_rows.write_table(md, None)
    assert md.read_text() == "| a |\n" and sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]
    assert len(drawn) == 1


def test_machine_line():
    line = table_rows.machine()
    assert line == (
        f"Machine: {platform.machine()} {os.cpu_count()} CPU cores, jax {jax.__version__} "
        f"on {jax.devices()[0].platform}"
    )
    assert table_rows.machine(os_name=True) == line.replace(
        " CPU cores,", f" CPU cores, {platform.platform()},"
    )


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr(plot, "for_table", lambda path: [])


def test_der_runs_a_rows_missing_seeds_and_reruns_it_whole_after_a_change(
    tmp_path, monkeypatch, no_plots, capsys
):
    out = tmp_path / "der"
    table = {"seq-mnist|er|200": _results([0, 1]), "seq-mnist|sgd|-": _results([0])}
    out.with_suffix(".json").write_text(json.dumps(table))
    calls = []

    def run_row(benchmark, data_dir, row, buffer, seeds, seed_devices=1):
        calls.append((row, buffer, tuple(seeds)))
        return _results(seeds, hparams=hparams)

    monkeypatch.setattr(reproduce_der, "run_row", run_row)
    argv = ["--benchmarks", "seq-mnist", "--rows", "er", "--buffers", "200", "--seeds", "3"]
    hparams = {"lr": 0.1}
    reproduce_der.main(argv + ["--out", str(out)])
    assert calls == [("er", 200, (2,))]
    rows = table_rows.load(out.with_suffix(".json"))
    assert rows["seq-mnist|er|200"]["seeds"] == [0, 1, 2] and "seq-mnist|sgd|-" in rows
    assert (
        "| seq-mnist | class-il | er | 200 | 61.00 +- 0.82 |" in out.with_suffix(".md").read_text()
    )
    hparams = {"lr": 0.2}  # the tuned settings changed since: seed 3 cannot join
    reproduce_der.main(argv[:-1] + ["4", "--out", str(out)])
    assert calls[1:] == [("er", 200, (3,)), ("er", 200, (0, 1, 2, 3))]
    assert "rerunning every seed" in capsys.readouterr().out
    row = table_rows.load(out.with_suffix(".json"))["seq-mnist|er|200"]
    assert row["seeds"] == [0, 1, 2, 3] and row["hparams"] == {"lr": 0.2}


def test_dyn_expand_joins_seeds_of_the_same_settings_only(tmp_path, monkeypatch, no_plots):
    # a tuple setting, as dyn_expand's milestones: the table holds it as a list
    planned = {**table_rows.with_defaults("er", {"lr": 0.1}), "milestones": (3,)}
    both = ("class-il", "task-il")
    table = {"er": _results([0], hparams=table_rows.as_json(planned), settings=both)}
    out = tmp_path / "dx"
    out.with_suffix(".json").write_text(json.dumps(table))
    calls = []

    def run_tuned(scenario, name, buffer, seeds, **kwargs):
        calls.append((name, tuple(seeds)))
        return _results(seeds, hparams=planned, method=name, settings=both)

    monkeypatch.setattr(reproduce_dyn_expand.scenarios, "build", lambda *a, **k: None)
    monkeypatch.setattr(reproduce_dyn_expand, "run_tuned", run_tuned)
    monkeypatch.setattr(reproduce_dyn_expand, "planned_hparams", lambda *a, **k: planned)
    argv = ["--seeds", "2", "--model", "mlp", "--rows", "er", "--out", str(out)]
    reproduce_dyn_expand.main(argv)
    assert calls == [("er", (1,))]
    assert table_rows.load(out.with_suffix(".json"))["er"]["seeds"] == [0, 1]
    planned = {**planned, "lr": 0.2}  # other settings: every seed again, the row replaced
    reproduce_dyn_expand.main(argv)
    assert calls[1:] == [("er", (0, 1))]
    assert table_rows.load(out.with_suffix(".json"))["er"]["hparams"]["lr"] == 0.2


def test_generative_joins_seeds_at_the_same_budget(tmp_path, monkeypatch, no_plots):
    monkeypatch.chdir(tmp_path)  # the rows' work dirs: runs/OUT-ROW-seeds-S
    hparams = {**table_rows.with_defaults("dgr", {}), "n_epochs": 1, "g_lr": 1e-4}
    row = {**_results([0], tasks=10, hparams=hparams, method="dgr"), "steps_per_task": 5}
    out = tmp_path / "gen"
    out.with_suffix(".json").write_text(json.dumps({"dgr": {**row, "requested_steps": 5}}))
    calls = []

    def run_tuned(scenario, name, buffer, seeds, *args, **kwargs):
        calls.append((name, tuple(seeds), kwargs["steps"]))
        return {**_results(seeds, tasks=10, hparams=hparams, method=name), "steps_per_task": 5}

    monkeypatch.setattr(reproduce_generative.scenarios, "build", lambda *a, **k: None)
    monkeypatch.setattr(reproduce_generative, "run_tuned", run_tuned)
    monkeypatch.setattr(reproduce_generative, "planned_hparams", lambda *a, **k: hparams)
    argv = ["--seeds", "2", "--rows", "dgr", "--out", str(out)]
    reproduce_generative.main(argv + ["--steps", "5"])
    assert calls == [("dgr", (1,), 5)]
    rows = table_rows.load(out.with_suffix(".json"))
    assert rows["dgr"]["seeds"] == [0, 1] and rows["dgr"]["requested_steps"] == 5
    reproduce_generative.main(argv + ["--steps", "7"])  # another budget: the row run again
    assert calls[1:] == [("dgr", (0, 1), 7)]
    assert table_rows.load(out.with_suffix(".json"))["dgr"]["requested_steps"] == 7


def test_tune_runs_a_point_again_for_other_seeds(tmp_path, monkeypatch):
    calls = []

    def run_tuned(scenario, method, buffer, seeds, **point):
        calls.append((point["lr"], tuple(seeds)))
        return _results(seeds, hparams=point)

    def run_tuned_grid(scenario, method, buffer, seeds, axes, **fixed):  # one program
        points = [{**fixed, "lr": lr} for lr in axes["lr"]]
        calls.extend((p["lr"], tuple(seeds)) for p in points)
        return [{**_results(seeds, hparams=p), "grid": {"values": {"lr": p["lr"]}}} for p in points]

    monkeypatch.setattr(tune.scenarios, "build", lambda *a, **k: None)
    monkeypatch.setattr(tune, "run_tuned", run_tuned)
    monkeypatch.setattr(tune, "run_tuned_grid", run_tuned_grid)
    out = tmp_path / "grid"
    argv = ["--benchmark", "seq-digits", "--method", "sgd", "--out", str(out), "--grid"]
    tune.main(["--seeds", "2", *argv, "lr=0.1,0.2"])
    tune.main(["--seeds", "2", *argv, "lr=0.2,0.3"])  # lr 0.2 is in the table
    tune.main(["--seeds", "1", *argv, "lr=0.1"])  # other seeds: lr 0.1 runs again, whole
    assert calls == [(0.1, (0, 1)), (0.2, (0, 1)), (0.3, (0, 1)), (0.1, (0,))]
    points = table_rows.load(out.with_suffix(".json"))
    assert {k: p["seeds"] for k, p in points.items()} == {
        "lr=0.1": [0],
        "lr=0.2": [0, 1],
        "lr=0.3": [0, 1],
    }
    assert (
        points["lr=0.2"]["mean"] == 60.5
        and "| 1 | `lr=0.2` |" in out.with_suffix(".md").read_text()
    )
