"""The contract every method keeps: a `Method` of typed pure functions, each always callable.

A user's own loop over tasks calls, for every method and with no special cases:

    state = method.init(key, example_x)
    for t, (x, y) in enumerate(tasks):
        task = TaskInfo(t, classes_of(t), ...)
        state = method.begin_task(state, task, key)              # shapes may change here
        state = method.begin_task_data(state, task, (x, y), key)  # on the task's data
        px, py, pvalid = method.train_pool(state, x[:1])          # items to train on too
        for batch in batches(x, y, px[pvalid], py[pvalid]):
            state, metrics = method.train_step(state, batch, key)
        state = method.end_task(state, task, (x, y), key)
    logits = method.predict(state, x_test)

The boundary functions take their arguments in one order, `(state, task, [data,] key)`,
positionally (each method names them as it likes),
and default to `unchanged` (the identity: as an optax transformation never holds a None);
`train_pool` defaults to `no_pool` (zero items). What a method asks of the driver that
runs it (the joint protocol, full last batches, the settings it can be scored in, a pool's
size) travels on the object, as `Method.needs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

State = Any  # a method's state: a pytree (flax.struct dataclasses of TrainStates, buffers...)
Batch = dict  # {"x": inputs (B, ...), "y": integer labels (B,)}
TaskData = tuple  # a task's training data `(x, y)`, raw as the scenario stores it


class _TaskFields(NamedTuple):
    index: int
    classes: tuple[int, ...]
    seen: tuple[int, ...] = ()  # every class of tasks 0..index (this one included)
    steps_per_epoch: int = 1  # batches in one pass over the task's training data
    steps: int = 0  # training steps this task takes (0: unknown)
    batch_size: int = 0  # items of the task a step (0: unknown)
    epochs: int = 0  # passes over the task's data (0: unknown, or set by steps)
    num_tasks: int = 0  # tasks in the whole sequence (0: unknown)


class TaskInfo(_TaskFields):
    """Static facts about the task about to start.

    `seen` (every class of tasks 0..index) is what LwF, iCaRL, PNN and dyn_expand read
    the past classes from: the first task's defaults to its own classes, a later task's
    must be given (`TaskInfo.of` builds it from every task's classes), so that a user's
    loop cannot leave it empty and silently train without the past."""

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls, *args, **kwargs)
        if not self.seen:
            if self.index > 0:
                raise ValueError(
                    f"TaskInfo of task {self.index}: give `seen`, the classes of tasks 0.."
                    f"{self.index} (TaskInfo.of(t, classes_of_every_task) builds it)"
                )
            self = self._replace(seen=tuple(self.classes))
        return self

    @classmethod
    def of(cls, index: int, task_classes, **facts) -> TaskInfo:
        """Task `index` of a sequence whose task j has classes `task_classes[j]`; `facts`
        the other fields (`batch_size`, `steps_per_epoch`, ...)."""
        seen = tuple(c for j in range(index + 1) for c in task_classes[j])
        facts.setdefault("num_tasks", len(task_classes))
        return cls(index, tuple(task_classes[index]), seen, **facts)


class InitFn(Protocol):
    def __call__(self, key: jax.Array, example_x: Any, /) -> State:
        """The method's state for inputs shaped like `example_x` (a batch of one or more)."""


class BeginTaskFn(Protocol):
    def __call__(self, state: State, task: TaskInfo, key: jax.Array, /) -> State:
        """Before task `task`'s data is seen: masks, heads, growth (shapes may change)."""


class TaskDataFn(Protocol):
    def __call__(self, state: State, task: TaskInfo, data: TaskData, key: jax.Array, /) -> State:
        """On the task's whole training data `(x, y)`: `begin_task_data` before its steps
        (LwF's warm-up), `end_task` after them (buffers, snapshots, Fisher)."""


class TrainStepFn(Protocol):
    def __call__(self, state: State, batch: Batch, key: jax.Array, /) -> tuple[State, dict]:
        """One optimizer step on `batch`: the new state and scalar metrics (`"loss"`)."""


class PredictFn(Protocol):
    def __call__(self, state: State, x: Any, /) -> jax.Array:
        """Logits (or scores) of raw inputs `x`, one row an item."""


class TrainPoolFn(Protocol):
    def __call__(self, state: State, example_x: Any, /) -> tuple[Any, Any, jax.Array]:
        """`(x, y, valid)`: items the method adds to the task's training data (iCaRL's
        exemplars), fixed during the task; `valid` marks the slots that hold one."""


def unchanged(state: State, task: TaskInfo, *data_and_key, **named) -> State:
    """The boundary function of a method with nothing to do there: the state as it is."""
    del task, data_and_key, named
    return state


def no_pool(state: State, example_x) -> tuple[Any, Any, jax.Array]:
    """The pool of a method that adds no items to a task's data: zero of them."""
    del state
    x = jnp.zeros((0, *jnp.shape(example_x)[1:]), jnp.asarray(example_x).dtype)
    return x, jnp.zeros((0,), jnp.int32), jnp.zeros((0,), bool)


# `Needs.settings` of a method whose mechanism needs each task's own classes (a memory, a
# classifier or a correction per class of the task): Mammoth's COMPATIBILITY ['class-il',
# 'task-il'], i.e. no domain-IL benchmark (Perm-/Rot-MNIST) and no general stream (MNIST-360),
# which `check_scenario` refuses
CLASS_SPLIT_SETTINGS = ("class-il", "task-il")


class Needs(NamedTuple):
    """What a method asks of the driver that runs it (read by `cljax.run.plan_run`)."""

    # "sequential": each task's data in turn; "joint": once, on every task's data
    protocol: str = "sequential"
    # "short": an epoch's last batch may hold fewer items; "fill": the steps need full
    # batches (e.g. cut into n_critic equal chunks)
    last_batch: str = "short"
    # the evaluation settings it can be scored in (None: any); e.g. ("task-il",) for a
    # method that needs the task's identity at test time
    settings: tuple[str, ...] | None = None
    # slots of its `train_pool` (0: it adds no items)
    pool_capacity: int = 0

    def check(self) -> Needs:
        if self.protocol not in ("sequential", "joint"):
            raise ValueError(f"needs.protocol must be sequential or joint, got {self.protocol!r}")
        if self.last_batch not in ("short", "fill"):
            raise ValueError(f"needs.last_batch must be short or fill, got {self.last_batch!r}")
        return self


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


_DEFAULTS = {
    "begin_task": unchanged,
    "end_task": unchanged,
    "begin_task_data": unchanged,
    "train_pool": no_pool,
}


class _MethodFields(NamedTuple):
    name: str
    config: Any  # the method's `Config` (cljax.core.config.Hyperparams)
    init: InitFn
    train_step: TrainStepFn
    predict: PredictFn
    begin_task: BeginTaskFn = unchanged
    end_task: TaskDataFn = unchanged
    host: HostHooks = HostHooks()
    begin_task_data: TaskDataFn = unchanged
    train_pool: TrainPoolFn = no_pool
    needs: Needs = Needs()


class Method(_MethodFields):
    """A continual-learning method as pure functions over its state pytree.

    Every function is callable (a None given for a boundary function or the pool is taken
    as "nothing to do": `unchanged`, `no_pool`); anything else that is not callable is
    refused when the method is made."""

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        fields = dict(zip(_MethodFields._fields, args, strict=False)) | kwargs
        for name, default in _DEFAULTS.items():
            if fields.get(name, default) is None:
                fields[name] = default
        self = super().__new__(cls, **fields)
        for name in ("init", "train_step", "predict", *_DEFAULTS):
            if not callable(getattr(self, name)):
                raise TypeError(
                    f"method {self.name!r}: {name} must be callable, got "
                    f"{type(getattr(self, name)).__name__}"
                )
        if not isinstance(self.needs, Needs):
            raise TypeError(f"method {self.name!r}: needs must be a methods.Needs")
        self.needs.check()
        return self

    @property
    def hparams(self) -> dict:
        """The configuration as written (what results.json records)."""
        return self.config.to_dict()

    def does(self, name: str) -> bool:
        """Whether boundary function or pool `name` does something (is not the default):
        the driver skips compiling the defaults."""
        return getattr(self, name) is not _DEFAULTS[name]
