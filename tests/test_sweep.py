"""Grids as a batch axis (`cljax.run.sweep`): a point of a grid trained beside the others in
one program equals the same point run alone, bit for bit; what cannot be swept is refused."""

import json

import jax
import numpy as np
import pytest

from cljax import cli, methods, models, train
from cljax.run import sweep
from tests.conftest import tiny_scenario

SC = tiny_scenario()
RUN = train.RunConfig(epochs=1, batch_size=4, seeds=(0, 1), progress=False)


def final(state):
    """The parameters and, for a replay method, the memory: what a point ends with."""
    return jax.tree.leaves((state.net.params, getattr(state, "buffer", None)))


@pytest.mark.parametrize(
    "name, grid, exact",
    [
        ("derpp", {"lr": (0.03, 0.1), "beta": (0.5, 1.5)}, True),  # replay; lr through the scale
        # regularisation: its penalty's constants are folded from e_lambda and gamma in double
        # precision by Python when they are numbers, in float32 when traced: 1 ulp apart
        ("ewc_on", {"e_lambda": (90.0, 30.0), "gamma": (1.0, 0.5)}, False),
        ("lwf", {"alpha": (0.5, 3.0)}, True),  # a teacher
    ],
)
def test_a_swept_point_equals_the_point_run_alone(name, grid, exact):
    module = methods.get(name)
    config = module.Config.build(getattr(module, "TEST_CONFIG", {}))
    model = models.MLP((8,), SC.num_classes)
    results = sweep.run_grid(module, config, grid, SC, RUN, model=model, input_fn=SC.input_fn)
    assert [r["grid"]["point"] for r in results] == list(range(len(sweep.points(grid))))
    last = results[-1]  # every value moved from the config's
    assert all(last["grid"]["values"][n] != getattr(config, n) for n in grid)
    point = module.Config.build({**config.to_dict(), **last["grid"]["values"]})
    alone = train.run(module.make(point, model=model, input_fn=SC.input_fn), SC, RUN)
    for a, b in zip(final(last["state"]), final(alone["state"]), strict=True):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    if exact:
        assert last["accuracy"] == alone["accuracy"]
    assert last["hparams"] == alone["hparams"] and last["seeds"] == [0, 1]
    pairs = zip(final(results[0]["state"]), final(last["state"]), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)  # the points trained differently


def test_what_a_grid_cannot_sweep_is_refused_in_one_line():
    der = methods.get("der")
    config = der.Config.build({})
    with pytest.raises(ValueError, match="no such setting"):
        sweep.check(der, config, {"alfa": (0.1, 0.2)})
    with pytest.raises(ValueError, match="separate commands"):
        sweep.check(der, config, {"buffer_size": (100.0, 200.0)})
    with pytest.raises(ValueError, match="separate commands"):  # it changes the program
        sweep.check(
            methods.get("xder"), methods.get("xder").Config.build({}), {"lambd": (0.0, 1.0)}
        )
    sc, run = SC, RUN
    for name, setting in (("dgr", "g_lr"), ("lucir", "optim_wd")):  # built into the optimizer
        module = methods.get(name)
        cfg = module.Config.build(getattr(module, "TEST_CONFIG", {}))
        model = models.MLP((8,), SC.num_classes)
        with pytest.raises(ValueError, match="builds an optimizer with it"):
            sweep.check_effect(
                module, cfg, {setting: (0.1, 0.2)}, sc, run, model=model, input_fn=SC.input_fn
            )
    with pytest.raises(ValueError, match="alpha"):  # the range of each point, as --set
        sweep.check(der, config, {"alpha": (0.5, -1.0)})
    for bad in (["lr"], ["lr=0.1,x"], ["lr=0.1", "lr=0.2"], ["lr=0.1,0.1"]):
        with pytest.raises(ValueError, match="--grid"):
            sweep.parse(bad)
    assert sweep.parse(["lr=0.1,0.3", "alpha=1"]) == {"lr": (0.1, 0.3), "alpha": (1.0,)}
    assert sweep.points({"a": (1, 2), "b": (3, 4)})[1] == {"a": 1, "b": 4}


def test_the_cli_writes_each_point_and_the_grid(tmp_path, capsys):
    workdir = tmp_path / "grid"
    argv = ["--method", "der", "--benchmark", "seq-digits", "--tasks", "2", "--seeds", "1"]
    argv += ["--buffer-size", "20"]
    argv += ["--set", "n_epochs=1", "--set", "batch_size=32", "--no-progress"]
    # 3 models over the 2 CPU devices the CLI makes: one padding copy
    argv += ["--grid", "alpha=0.1,0.3,1.0", "--valid-fraction", "0.1", "--workdir", str(workdir)]
    assert cli.main(argv) == 0
    grid = json.loads((workdir / "grid.json").read_text())
    assert grid["measure"] == "validation" and grid["swept"] == {"alpha": [0.1, 0.3, 1.0]}
    for i, alpha in enumerate((0.1, 0.3, 1.0)):
        res = json.loads((workdir / f"point-{i}" / "results.json").read_text())
        assert res["hparams"]["alpha"] == alpha and res["grid"]["values"] == {"alpha": alpha}
    best = max(grid["points"], key=lambda p: p["final_average_accuracy"]["class-il"]["mean"])
    assert grid["best"] == best["point"] and (workdir / "grid.png").exists()
    assert "best (validation): alpha=" in capsys.readouterr().out
    bad = [*argv[:-2], "--grid", "buffer_size=10,20", "--workdir", str(tmp_path / "x")]
    assert cli.main(bad) == 2 and not (tmp_path / "x").exists()  # one line, nothing written
    assert "separate commands" in capsys.readouterr().err


def test_tune_runs_the_points_a_grid_can_sweep_as_one_program(tmp_path, monkeypatch):
    from experiments import tune

    def not_alone(*args, **kwargs):
        raise AssertionError("a sweepable point ran as a program of its own")

    monkeypatch.setattr(tune, "run_tuned", not_alone)
    out = tmp_path / "tune_der"
    argv = ["--benchmark", "seq-digits", "--method", "der", "--seeds", "1", "--out", str(out)]
    tune.main([*argv, "--grid", "n_epochs=1", "batch_size=32", "alpha=0.1,0.3"])
    rows = json.loads(out.with_suffix(".json").read_text())
    assert sorted(rows) == [
        "alpha=0.1 batch_size=32 n_epochs=1",
        "alpha=0.3 batch_size=32 n_epochs=1",
    ]
    assert {r["hparams"]["alpha"] for r in rows.values()} == {0.1, 0.3}
