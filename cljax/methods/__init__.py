"""Continual-learning methods, one module each, found by listing this folder.

A method module (any module here not starting with `_` that defines `Config`
and `make`) declares:

- `Config`: a frozen dataclass of `cljax.config.hparam` fields, the one place
  each hyperparameter is named (type, default, range, doc);
- `make(config=None, *, model, input_fn, **overrides) -> Method`;
- optionally `TEST_CONFIG` (small overrides the contract tests use),
  `TEST_MODEL` ("mlp" or "cnn": the tiny backbone of those tests),
  `PROTOCOL` ("joint": the driver trains it once on every task's data) and
  `check_run(config, batch_size)` (constraints between it and the run settings) and
  `SETTINGS` (the evaluation settings it can be scored in, e.g. ("task-il",) for a method
  that needs the task's identity at test time; `check_scenario` refuses the others).

A `Method` is a NamedTuple of pure functions (the begin_task / train_step /
end_task vocabulary of Mammoth, without mutable objects):

- `init(key, example_x) -> state`
- `begin_task(state, task, key) -> state`   (task: `TaskInfo`; shapes may change here)
- `begin_task_data(state, task_data, key, task) -> state`   (after `begin_task`, before
  the task's steps, on its training data `(x, y)`: LwF's warm-up of its classifier)
- `train_step(state, batch, key) -> (state, metrics)`   (jitted, scanned over a task)
- `end_task(state, task_data, key, task) -> state`      (task_data: the task's `(x, y)`)
- `predict(state, x) -> logits`
- `train_pool(state) -> (x, y, valid)`: items the method adds to each task's training
  data (iCaRL's exemplars: raw inputs, labels, which slots hold one), fixed during the
  task; the driver shuffles the valid ones in with the task's items each epoch

`begin_task`, `begin_task_data` and `end_task` are None for methods with nothing to do
there. These are jitted and vmapped over seeds by the driver. Host-side extras are one
optional `HostHooks`.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, NamedTuple

from cljax.config import Hyperparams

# Modules of this folder that hold pieces shared by several methods, not methods.
SHARED = ("common", "generative", "scholar")


class TaskInfo(NamedTuple):
    """Static facts about the task about to start."""

    index: int
    classes: tuple[int, ...]
    seen: tuple[int, ...] = ()  # every class of tasks 0..index (this one included)
    steps_per_epoch: int = 1  # batches in one pass over the task's training data
    steps: int = 0  # training steps this task takes (0: unknown)
    batch_size: int = 0  # items of the task a step (0: unknown)
    epochs: int = 0  # passes over the task's data (0: unknown, or set by steps)
    num_tasks: int = 0  # tasks in the whole sequence (0: unknown)


class HostHooks(NamedTuple):
    """Optional host-side extras of a method (each None where it has none).

    - `resize(state, task) -> state`: plain host code on one seed's state after
      `end_task`, for shape changes that depend on the data (pruning, growth);
      the driver then runs seeds one after another instead of under `vmap`.
    - `describe(state) -> dict`: JSON numbers per seed after each task (e.g.
      parameter counts), collected under "per_task" in results.json.
    - `sample(state, key, per_class=8) -> (images, labels or None)`: generated
      samples (pure, jittable), for sample grids and generated-sample accuracy.
    """

    resize: Callable[..., Any] | None = None
    describe: Callable[..., dict] | None = None
    sample: Callable[..., Any] | None = None


class Method(NamedTuple):
    """A continual-learning method as pure functions over its state pytree."""

    name: str
    config: Hyperparams
    init: Callable[..., Any]
    train_step: Callable[..., Any]
    predict: Callable[..., Any]
    begin_task: Callable[..., Any] | None = None
    end_task: Callable[..., Any] | None = None
    host: HostHooks = HostHooks()
    begin_task_data: Callable[..., Any] | None = None
    train_pool: Callable[..., Any] | None = None

    @property
    def hparams(self) -> dict:
        """The configuration as written (what results.json records)."""
        return self.config.to_dict()


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


def protocol(name: str) -> str:
    """How the driver feeds method `name` its data: "sequential" or "joint"."""
    return getattr(get(name), "PROTOCOL", "sequential")


def last_batch_of(name: str) -> str:
    """How method `name` takes an epoch's last batch: "short" (any number of items; the
    default) or "fill" (its steps need the full batch, e.g. `n_critic` equal chunks)."""
    return getattr(get(name), "LAST_BATCH", "short") if name in names() else "short"


def settings_of(name: str) -> tuple[str, ...] | None:
    """The evaluation settings method `name` can be scored in (None: any; not a method of
    this folder: any)."""
    return getattr(get(name), "SETTINGS", None) if name in names() else None


def check_scenario(name: str, scenario_name: str, settings: tuple[str, ...]) -> None:
    """Refuses a benchmark none of whose evaluation `settings` method `name` can be scored in
    (a method from outside this folder is not checked)."""
    allowed = settings_of(name)
    if allowed is not None and not set(allowed) & set(settings):
        raise ValueError(
            f"method {name!r} can only be scored in {', '.join(allowed)}, and benchmark "
            f"{scenario_name!r} has {', '.join(settings)}; choose a class-incremental benchmark"
        )


def configure(config_cls, config, overrides: dict):
    """`config` (or the defaults) with `overrides` applied, validated by `config_cls`."""
    if config is None:
        return config_cls.build(overrides)
    if not isinstance(config, config_cls):
        raise TypeError(f"expected a {config_cls.__module__}.Config, got {type(config).__name__}")
    return config_cls.build({**config.to_dict(), **overrides}) if overrides else config
