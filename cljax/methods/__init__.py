"""Continual-learning methods, one module each, looked up by name.

Every module has `make(*, model, input_fn, **hparams) -> Method`. A `Method` is a
NamedTuple of pure functions (the begin_task / train_step / end_task vocabulary of
Mammoth, without mutable objects):

- `init(key, example_x) -> state`
- `begin_task(state, task, key) -> state`   (task: `TaskInfo`; shapes may change here)
- `train_step(state, batch, key) -> (state, metrics)`   (jitted, scanned over a task)
- `end_task(state, task_data, key, task) -> state`      (task_data: the task's `(x, y)`)
- `predict(state, x) -> logits`

These are jitted and vmapped over seeds by the driver. Methods whose state
changes shape in a way that depends on the data (pruning, growth by the number
of free units) add `resize(state, task) -> state`: plain host code on one
seed's state, called after `end_task`; the driver then runs seeds one after
another instead of under `vmap`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

NAMES = ("sgd", "joint", "er", "der", "derpp", "dgr", "mergan", "dgm", "dyn_expand")


class TaskInfo(NamedTuple):
    """Static facts about the task about to start."""

    index: int
    classes: tuple[int, ...]
    seen: tuple[int, ...] = ()  # every class of tasks 0..index (this one included)
    steps_per_epoch: int = 1  # batches in one pass over the task's training data
    steps: int = 0  # training steps this task takes (0: unknown)


class Method(NamedTuple):
    """A continual-learning method as pure functions over its state pytree."""

    name: str
    init: Callable[..., Any]
    begin_task: Callable[..., Any]
    train_step: Callable[..., Any]
    end_task: Callable[..., Any]
    predict: Callable[..., Any]
    hparams: dict
    # True for the `joint` upper bound: the driver trains it once, after the
    # last task has arrived, on the union of every task's training data.
    joint: bool = False
    # Generative methods: `sample(state, key, per_class=8) -> (images, labels or
    # None)` for the sample grids the driver writes after every task (and for
    # `evaluation.generated_accuracy`).
    sample: Callable[..., Any] | None = None
    # Host-side, per seed, after `end_task`: shape changes that depend on the data.
    resize: Callable[..., Any] | None = None
    # Host-side, per seed, after each task: JSON numbers for results.json
    # (e.g. parameter counts), collected under "per_task".
    describe: Callable[..., dict] | None = None


def get(name: str):
    """The module of method `name` (it has `make` and `HPARAMS`)."""
    if name not in NAMES:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(NAMES)}")
    return importlib.import_module(f"cljax.methods.{name}")


def identity_begin(state, task, key):
    """`begin_task` of methods that need no preparation."""
    del task, key
    return state


def identity_end(state, task_data, key, task):
    """`end_task` of methods that need no consolidation."""
    del task_data, key, task
    return state
