"""Run a method on a scenario with its tuned settings (shared by the experiment scripts)."""

from __future__ import annotations

import dataclasses
import sys

from cljax import methods, train
from cljax.outputs import report
from cljax.run import sweep
from cljax.tuned import build, model_of, resolve

CONFIG_KEYS = {"epochs": "n_epochs", "first_epochs": "first_epochs", "steps": "steps"}
CONFIG_KEYS |= {"batch_size": "batch_size"}
RUN_FIELDS = ("devices", "seed_devices", "progress")


def build_tuned(scenario, method_name, buffer_size, **overrides):
    """`(method, RunConfig fields)` of `method_name` on `scenario` with its tuned settings.

    `overrides` replace tuned settings (None leaves the tuned value); `epochs` is
    `n_epochs`; `devices`, `seed_devices` and `progress` go to the `RunConfig`.
    """
    settings, config = tuned_settings(scenario, method_name, buffer_size, **overrides)
    return build(settings, scenario), config


def tuned_settings(scenario, method_name, buffer_size, **overrides):
    """`(Settings, RunConfig)` of `method_name` on `scenario` with its tuned settings and
    `overrides` (as `build_tuned`)."""
    overrides = {CONFIG_KEYS.get(k, k): v for k, v in overrides.items() if v is not None}
    fields = {k: overrides.pop(k) for k in RUN_FIELDS if k in overrides}
    settings = resolve(method_name, scenario.name, buffer_size, overrides)
    fields.setdefault("progress", sys.stderr.isatty())  # bars in a terminal, none in a log file
    return settings, settings.run.run_config(**fields)


def planned_hparams(scenario, method_name, buffer_size, **overrides):
    """The `hparams` a run of `run_tuned` with these arguments records in its results."""
    method, config = build_tuned(scenario, method_name, buffer_size, **overrides)
    return report.recorded_hparams(method.hparams, config)


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
    """Results (state dropped) of `method_name` on `scenario` with its tuned settings
    (`overrides` as in `build_tuned`; `after_task(method) -> train.run's after_task` or None,
    `after_chunk` likewise; `resume`: continue from the checkpoint in `workdir`, as
    `train.run`)."""
    method, config = build_tuned(scenario, method_name, buffer_size, **overrides)
    res = train.run(
        method,
        scenario,
        dataclasses.replace(config, seeds=tuple(seeds)),
        workdir,
        resume=resume,
        after_task=after_task(method) if after_task else None,
        after_chunk=after_chunk(method) if after_chunk else None,
    )
    res.pop("state")
    res["steps_per_task"] = config.steps
    return res


def run_tuned_grid(scenario, method_name, buffer_size, seeds, grid: dict, **overrides):
    """Results (states dropped), one per point, of `method_name` on `scenario` with its tuned
    settings and `overrides` (as `build_tuned`), every point of `grid` (`{setting: values}`,
    settings the method's grid can sweep: `cljax.run.sweep`) x every seed in one program."""
    settings, config = tuned_settings(scenario, method_name, buffer_size, **overrides)
    config = dataclasses.replace(config, seeds=tuple(seeds))
    module, model = methods.get(method_name), model_of(settings, scenario)
    results = sweep.run_grid(
        module, settings.config, grid, scenario, config, model=model, input_fn=scenario.input_fn
    )
    for res in results:
        res.pop("state")
        res["steps_per_task"] = config.steps
    return results
