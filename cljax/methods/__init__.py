"""Continual-learning methods, one module each, found by listing this folder.

A method module (any module here not starting with `_` that defines `Config`
and `make`) declares:

- `Config`: a frozen dataclass of `cljax.core.config.hparam` fields, the one place
  each hyperparameter is named (type, default, range, doc);
- `make(config=None, *, model, input_fn, **overrides) -> Method`;
- optionally `TEST_CONFIG` (small overrides the contract tests use),
  `TEST_MODEL` ("mlp" or "cnn": the tiny backbone of those tests) and
  `check_run(config, batch_size)` (constraints between it and the run settings).

A `Method` (`cljax.methods._contract`) is a NamedTuple of pure functions, every one
callable, the begin_task / train_step / end_task vocabulary of Mammoth without mutable
objects; the boundary functions take `(state, task, [data,] key)`:

- `init(key, example_x) -> state`
- `begin_task(state, task, key) -> state`   (task: `TaskInfo`; shapes may change here)
- `begin_task_data(state, task, (x, y), key) -> state`   (before the task's steps, on its
  training data: LwF's warm-up of its classifier)
- `train_step(state, batch, key) -> (state, metrics)`   (jitted, scanned over a task)
- `end_task(state, task, (x, y), key) -> state`
- `predict(state, x) -> logits`
- `train_pool(state, example_x) -> (x, y, valid)`: items the method adds to each task's
  training data (iCaRL's exemplars: raw inputs, labels, which slots hold one), fixed during
  the task; the driver shuffles the valid ones in with the task's items each epoch

A method with nothing to do at a boundary keeps the default (`unchanged`: the identity;
`no_pool`: zero items). `Method.needs` (`Needs`) says what it asks of the driver: the
joint protocol, full last batches, the settings it can be scored in, its pool's size.
These are jitted and vmapped over seeds by the driver. Host-side extras are one optional
`HostHooks`.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from cljax.methods._contract import (
    CLASS_SPLIT_SETTINGS,
    BeginTaskFn,
    HostHooks,
    InitFn,
    Method,
    Needs,
    PredictFn,
    TaskDataFn,
    TaskInfo,
    TrainPoolFn,
    TrainStepFn,
    no_pool,
    unchanged,
)

__all__ = [
    "CLASS_SPLIT_SETTINGS",
    "BeginTaskFn",
    "HostHooks",
    "InitFn",
    "Method",
    "Needs",
    "PredictFn",
    "TaskDataFn",
    "TaskInfo",
    "TrainPoolFn",
    "TrainStepFn",
    "check_scenario",
    "configure",
    "get",
    "names",
    "no_pool",
    "register",
    "unchanged",
]

# Modules of this folder that hold pieces shared by several methods, not methods.
SHARED = ("common", "generative", "scholar")


_REGISTERED: dict[str, Any] = {}  # methods defined outside this folder (`register`)


@functools.cache
def _folder() -> tuple[str, ...]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in SHARED:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "Config") and hasattr(module, "make"):
            found.append(info.name)
    return tuple(found)


def names() -> tuple[str, ...]:
    """Every method: this folder's and those registered from outside it, sorted."""
    return tuple(sorted({*_folder(), *_REGISTERED}))


def register(name: str, module) -> None:
    """Makes `module` (anything with `Config` and `make`, as a module of this folder, and
    the same optional attributes) method `name`, for `get`, the `cljax` command
    (`--import` the module that calls this) and the tuned-settings lookup; a name this
    folder already has is refused."""
    missing = [a for a in ("Config", "make") if not hasattr(module, a)]
    if missing:
        raise ValueError(f"cannot register {name!r}: it has no {' or '.join(missing)}")
    again = name in _REGISTERED and (
        _REGISTERED[name] is module
        or getattr(_REGISTERED[name], "__file__", None) == getattr(module, "__file__", 0)
    )  # the same file imported again (as a script, then by `--import`): the newer one
    if name in _folder() or (name in _REGISTERED and not again):
        raise ValueError(f"cannot register {name!r}: a method of that name exists")
    if not name.isidentifier():
        raise ValueError(f"cannot register {name!r}: a method's name is a Python identifier")
    _REGISTERED[name] = module


def get(name: str):
    """The module of method `name` (it has `Config` and `make`)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _folder():
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}")


def check_scenario(method: Method, scenario_name: str, settings: tuple[str, ...]) -> None:
    """Refuses a benchmark none of whose evaluation `settings` `method` can be scored in
    (`method.needs.settings`)."""
    allowed = method.needs.settings
    if allowed is not None and not set(allowed) & set(settings):
        raise ValueError(
            f"method {method.name!r} can only be scored in {', '.join(allowed)}, and benchmark "
            f"{scenario_name!r} has {', '.join(settings)}; choose a class-incremental benchmark"
        )


def configure(config_cls, config, overrides: dict):
    """`config` (or the defaults) with `overrides` applied, validated by `config_cls`."""
    if config is None:
        return config_cls.build(overrides)
    if not isinstance(config, config_cls):
        raise TypeError(f"expected a {config_cls.__module__}.Config, got {type(config).__name__}")
    return config_cls.build({**config.to_dict(), **overrides}) if overrides else config
