"""Run a method on a scenario with its tuned hyperparameters (shared by the experiment scripts)."""

from __future__ import annotations

import sys

from cljax import methods, models, report, train
from experiments.configs import best_args

CONFIG_KEYS = ("epochs", "first_epochs", "steps", "batch_size", "devices", "progress")


def build_tuned(scenario, method_name, buffer_size, **overrides):
    """`(method, RunConfig fields)` of `method_name` on `scenario` with `best_args`' settings.

    `overrides` replace tuned hyperparameters, or `RunConfig` fields when named
    in `CONFIG_KEYS` (None leaves the tuned value).
    """
    hparams, _ = best_args.get(scenario.name, method_name, buffer_size or 1)
    config = {
        "epochs": hparams.pop("n_epochs"),
        "batch_size": hparams.pop("batch_size"),
        "steps": hparams.pop("steps", None),
        "first_epochs": hparams.pop("first_epochs", None),
        "progress": sys.stderr.isatty(),  # bars in a terminal, none in a log file
    }
    for key, value in overrides.items():
        if value is not None:
            (config if key in CONFIG_KEYS else hparams)[key] = value
    model = models.make(hparams.pop("model", None) or scenario.model, scenario.num_classes)
    method = methods.get(method_name).make(model=model, input_fn=scenario.input_fn, **hparams)
    return method, config


def planned_hparams(scenario, method_name, buffer_size, **overrides):
    """The `hparams` a run of `run_tuned` with these arguments records in its results."""
    method, config = build_tuned(scenario, method_name, buffer_size, **overrides)
    return report.recorded_hparams(method.hparams, train.RunConfig(**config))


def run_tuned(
    scenario,
    method_name,
    buffer_size,
    seeds,
    workdir=None,
    after_task=None,
    resume=False,
    after_chunk=None,
    **overrides,
):
    """Results (state dropped) of `method_name` on `scenario` with `best_args`' settings
    (`overrides` as in `build_tuned`; `after_task(method) -> train.run's after_task` or None,
    `after_chunk` likewise;
    `resume`: continue from the checkpoint in `workdir`, as `train.run`)."""
    method, config = build_tuned(scenario, method_name, buffer_size, **overrides)
    res = train.run(
        method,
        scenario,
        train.RunConfig(seeds=tuple(seeds), **config),
        workdir,
        resume=resume,
        after_task=after_task(method) if after_task else None,
        after_chunk=after_chunk(method) if after_chunk else None,
    )
    res.pop("state")
    res["steps_per_task"] = config["steps"]
    return res
