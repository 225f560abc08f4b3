"""Experience Replay (`er`) with a reservoir buffer, as in Mammoth and the DER paper.

Each step concatenates the current batch with `minibatch_size` buffer items
and minimises the cross-entropy over the concatenation; then the current
(non-augmented) batch is offered to the reservoir.
Loss: CE([x; x_buf], [y; y_buf]).

While the buffer holds fewer than `minibatch_size` items (none, at first), the replayed
part is padded with slots of weight 0, one compiled shape for every step; they stay out
of the loss and of BatchNorm's batch statistics (`resnet18`'s `mask`), so a step equals
Mammoth's, which forwards the batch with the items there are
(`tests/test_torch_equivalence.py`).

As van de Ven et al.'s code runs it (GMvandeVen/continual-learning e6d795a, `replay="buffer"`
with random sample selection; its `split-mnist*` rows): `memory="task_end"` (no reservoir: at
each task's end `buffer_size // num_tasks` random items of the task join the memory, an equal
share of each class with `balanced`: its budget of 100 a class is `buffer_size=1000` over five
two-class tasks), `weighting="tasks"` (in task t, counting from 1, the loss is
`CE(current) / t + (1 - 1/t) CE(replayed)`, two forward passes), `minibatch_size` 128, Adam,
and in task-IL `task_heads`. Where this deviates from that code: its task-IL replay is
ceil(128 / (t - 1)) items from each earlier task's memory, the loss averaged per task then
over tasks; here 128 items drawn from the whole memory, averaged over items (the same in
expectation); its memory batches are consecutive batches of a shuffled pass (drop_last), here
each step's a fresh draw without replacement.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from cljax.core import buffer as buffer_lib
from cljax.core.config import hparam
from cljax.methods import Method, TaskInfo, configure
from cljax.methods.common import (
    TASK_HEADS_DOC,
    NetState,
    ReplayConfig,
    add_task_memory,
    cross_entropy,
    forward,
    masked_mean,
    mixed_batch,
    on_task_heads,
    optimizer,
    optimizer_hparam,
    predict_with,
    replay_batch,
    replay_init,
    sgd_update,
)

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    memory: str = hparam(
        "reservoir",
        "reservoir (each batch offered: Mammoth's) or task_end (random items of each task "
        "added at its end: van de Ven et al.'s)",
        choices=("reservoir", "task_end"),
    )
    weighting: str = hparam(
        "concat",
        "concat (CE over the batch and the replayed items together: Mammoth's) or tasks "
        "(CE(current) / t + (1 - 1/t) CE(replayed) in task t: van de Ven et al.'s)",
        choices=("concat", "tasks"),
    )
    balanced: bool = hparam(
        False, "task_end memory: an equal share of each class of the task (van de Ven's)"
    )
    optimizer: str = optimizer_hparam()
    task_heads: int = hparam(0, TASK_HEADS_DOC, ge=0)


@struct.dataclass
class TaskReplayState:
    """The network, the memory and the current task's index (`weighting="tasks"`)."""

    net: NetState
    buffer: buffer_lib.Buffer
    task: jax.Array


def train_step(config: Config, input_fn, state, batch, key):
    """CE over the current batch and `minibatch_size` replayed items (concatenated, or weighted
    by the task); then, with a reservoir, the batch offered to it."""
    k_cur, k_buf, k_add = jax.random.split(key, 3)
    net = state.net
    if config.weighting == "concat":
        x, y, weight = mixed_batch(state, batch, k_cur, k_buf, config.minibatch_size, input_fn)

        def loss_fn(params):
            logits, stats = forward(net, params, x, net.batch_stats, weight=weight)
            logits = on_task_heads(logits, y, config.task_heads)
            return masked_mean(cross_entropy(logits, y), weight), (
                stats,
                None,
            )

    else:
        x = input_fn(batch["x"], k_cur, True)
        mem_x, mem, valid = replay_batch(state, k_buf, config.minibatch_size, input_fn)
        stored = state.buffer.num_seen > 0
        r = 1.0 / (state.task.astype(jnp.float32) + 1.0)

        def loss_fn(params):
            logits, stats = forward(net, params, x, net.batch_stats)
            logits = on_task_heads(logits, batch["y"], config.task_heads)
            current = cross_entropy(logits, batch["y"]).mean()
            logits_m, stats = forward(net, params, mem_x, stats, active=stored, weight=valid)
            logits_m = on_task_heads(logits_m, mem["y"], config.task_heads)
            replayed = masked_mean(cross_entropy(logits_m, mem["y"]), valid)
            return jnp.where(stored, r * current + (1.0 - r) * replayed, current), (stats, None)

    net, loss, _ = sgd_update(net, loss_fn)
    state = state.replace(net=net)
    if config.memory == "reservoir":
        items = {"x": batch["x"], "y": batch["y"]}
        state = state.replace(buffer=buffer_lib.add(state.buffer, items, k_add))
    return state, {"loss": loss}


def begin_task(state: TaskReplayState, task: TaskInfo, key):
    """The task's index (`weighting="tasks"` only)."""
    del key
    return state.replace(task=jnp.asarray(task.index, jnp.int32))


def end_task(config: Config, state, task: TaskInfo, task_data, key):
    """`buffer_size // num_tasks` random items of the task (an equal share of each class:
    `balanced`) join the memory (`memory="task_end"` only)."""
    return add_task_memory("er", state, config.buffer_size, task, task_data, key, config.balanced)


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """ER with SGD (or Adam) at `lr`, a buffer of `buffer_size`, `minibatch_size` replayed
    items a step."""
    config = configure(Config, config, overrides)
    if config.balanced and config.memory != "task_end":
        raise ValueError(
            "er: balanced=true shares a task's memory out among its classes at the task's end; "
            "set memory=task_end too, or leave balanced off"
        )
    tx = optimizer(config.optimizer, config.lr)
    init = replay_init(model, tx, input_fn, config.buffer_size)
    if config.weighting == "tasks":
        plain = init

        def init(key, example_x):
            state = plain(key, example_x)
            return TaskReplayState(
                net=state.net, buffer=state.buffer, task=jnp.zeros((), jnp.int32)
            )

    return Method(
        name="er",
        config=config,
        init=init,
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
        # boundaries only where they do something: Mammoth's ER runs on a stream
        begin_task=begin_task if config.weighting == "tasks" else None,
        end_task=(
            (lambda state, task, data, key: end_task(config, state, task, data, key))
            if config.memory == "task_end"
            else None
        ),
    )
