"""Function Distance Regularization (`fdr`): Benjamin, Rolnick & Kording, ICLR 2019
(arXiv 1805.08289), as the DER paper ran it (Mammoth's `models/fdr.py` of the paper's
release, commit 7ab9db9).

Each step is two SGD steps: one on the cross-entropy of the current batch, then,
once the memory holds items, one on the function distance of `minibatch_size`
memory items (drawn without replacement):

    mean_n || softmax(f(x_n)) - softmax(z_n) ||_2

with `z_n` the network's logits stored with item n when its task ended (the
paper's L2 distance between the outputs, in function space). The memory: at
each task's end, with `t` tasks done, every earlier task keeps its first
`buffer_size // t` items and the task just ended adds its first `buffer_size //
t` training items (in a random order, Mammoth's shuffled loader), with their
logits under the network of the task's end.

Those logits are computed as Mammoth computes them (5dc82be `models/fdr.py:52-65`,
the network still in training mode there): `stored_logits="train"`, the default,
runs the shuffled task in batches of the training batch size through the network
in training mode, each batch normalised by its own BatchNorm statistics, and the
running statistics move with every batch it runs (its loop runs one batch past the
last it stores, so ours does too), as they do in Mammoth. `stored_logits="eval"`
computes them in inference mode with the running statistics, which it leaves
alone (our first version). Without BatchNorm the two are the same logits.

Where this deviates from Mammoth, and why:
- Mammoth's best settings list an `alpha` for FDR that its code never reads
  (the distance step has weight 1); we have no `alpha`.
- The stored logits are computed on the items as the training transform gives
  them (Mammoth's `net(inputs)`), the items stored un-augmented, as Mammoth.
- `stored_logits="eval"` (above) is not Mammoth's: its logits depend on no
  batch, but the distance steps compare them with outputs in training mode.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax.core import buffer as buffer_lib
from cljax.core.config import hparam
from cljax.methods import Method, TaskInfo, configure
from cljax.methods.common import (
    NetState,
    ReplayConfig,
    ce_and_grads,
    create_net,
    forward,
    masked_mean,
    predict,
    predict_with,
)
from cljax.models.dyn_expand import chunked

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    minibatch_size: int = hparam(128, "memory items of each function-distance step", ge=1)
    stored_logits: str = hparam(
        "train",
        "BatchNorm mode of the logits stored at a task's end: train (Mammoth: each batch's "
        "statistics, the running ones moved) or eval (the running statistics)",
        choices=("train", "eval"),
    )


@struct.dataclass
class Memory:
    """Stored items: raw inputs, logits at their task's end, task, order within the task."""

    x: jax.Array
    logits: jax.Array
    task: jax.Array
    rank: jax.Array
    valid: jax.Array


@struct.dataclass
class FdrState:
    net: NetState
    memory: Memory


def function_distance(probs, stored_logits):
    """Per item: the L2 distance between `probs` and the softmax of `stored_logits`."""
    return jnp.linalg.norm(probs - jax.nn.softmax(stored_logits), axis=-1)


def train_step(config: Config, input_fn, state: FdrState, batch, key):
    """An SGD step on the batch's cross-entropy, then one on the memory's function distance."""
    k_cur, k_idx, k_aug = jax.random.split(key, 3)
    net = state.net
    ce, stats, grads = ce_and_grads(net, input_fn(batch["x"], k_cur, True), batch["y"])
    net = net.apply_gradients(grads=grads, batch_stats=stats)
    mem = state.memory
    idx, valid = buffer_lib.sample_valid(mem.valid, k_idx, config.minibatch_size)
    xb = input_fn(mem.x[idx], k_aug, True)
    weight = valid.astype(jnp.float32)

    def distance_fn(params):
        out, stats = forward(net, params, xb, net.batch_stats)
        dist = function_distance(jax.nn.softmax(out), mem.logits[idx])
        return masked_mean(dist, weight), stats

    (dist, stats), grads = jax.value_and_grad(distance_fn, has_aux=True)(net.params)
    stored = mem.valid.any()
    moved = net.apply_gradients(grads=grads, batch_stats=stats)
    net = jax.tree.map(lambda a, b: jnp.where(stored, a, b), moved, net)
    return state.replace(net=net), {"loss": ce, "distance": dist}


def train_mode_logits(net: NetState, input_fn, x_order, m: int, batch: int, key):
    """Mammoth's end-of-task pass: `(logits of the first m items, running statistics)` of
    raw inputs `x_order` (the task in its shuffled order) through `net` in training mode, in
    batches of `batch` (the last one shorter if the task ends there), each augmented and
    normalised by its own statistics, the running statistics updated batch after batch.
    Mammoth's loop breaks only once a batch's counter passes `m`, after running it: it
    runs `m // batch + 2` batches (or all the task's)."""
    n = x_order.shape[0]
    passes = min(m // batch + 2, -(-n // batch))
    full = min(passes, n // batch)
    keys = jax.random.split(key, passes)

    def run(stats, inputs):
        xb, k = inputs
        logits, stats = forward(net, net.params, input_fn(xb, k, True), stats)
        return stats, logits

    stats, logits = net.batch_stats, []
    if full:
        xs = x_order[: full * batch].reshape(full, batch, *x_order.shape[1:])
        stats, out = jax.lax.scan(run, stats, (xs, keys[:full]))
        logits.append(out.reshape(full * batch, -1))
    if passes > full:  # the task's last, shorter batch
        stats, out = run(stats, (x_order[full * batch :], keys[full]))
        logits.append(out)
    return jnp.concatenate(logits)[:m], stats


def end_task(config: Config, input_fn, state: FdrState, task: TaskInfo, task_data, key):
    """Every task keeps its first `buffer_size // (t + 1)` items; the new task adds as many,
    with its logits (`stored_logits`: Mammoth's training-mode pass, or inference mode)."""
    m = config.buffer_size // (task.index + 1)
    if m < 1:
        raise ValueError(
            f"buffer_size {config.buffer_size} is smaller than the {task.index + 1} tasks "
            "seen; choose a larger buffer"
        )
    x, y = task_data
    k_pick, k_aug = jax.random.split(key)
    order = jax.random.permutation(k_pick, y.shape[0])
    pick = order[:m]
    new_x = x[pick]
    net = state.net
    if config.stored_logits == "train" and net.batch_stats:  # static: BatchNorm present
        batch = task.batch_size or 32
        logits, stats = train_mode_logits(net, input_fn, jnp.asarray(x)[order], m, batch, k_aug)
        net = net.replace(batch_stats=stats)
    else:  # inference mode (without BatchNorm the training mode's logits are these)
        logits = chunked(
            lambda xb: predict(net, input_fn(xb, k_aug, True)), new_x, min(500, new_x.shape[0])
        )
    mem = state.memory
    keep = mem.valid & (mem.rank < m)
    free = jnp.argsort(keep, stable=True)[: pick.shape[0]]  # free slots first
    memory = Memory(
        x=mem.x.at[free].set(new_x),
        logits=mem.logits.at[free].set(logits),
        task=mem.task.at[free].set(task.index),
        rank=mem.rank.at[free].set(jnp.arange(pick.shape[0], dtype=jnp.int32)),
        valid=keep.at[free].set(True),
    )
    return state.replace(net=net, memory=memory)


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """FDR with SGD at `lr`, `buffer_size` memory items, `minibatch_size` a distance step."""
    config = configure(Config, config, overrides)
    tx = optax.sgd(config.lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        k = config.buffer_size
        memory = Memory(
            x=jnp.zeros((k, *example_x.shape[1:]), example_x.dtype),
            logits=jnp.zeros((k, model.num_classes), jnp.float32),
            task=jnp.zeros(k, jnp.int32),
            rank=jnp.zeros(k, jnp.int32),
            valid=jnp.zeros(k, bool),
        )
        return FdrState(net=net, memory=memory)

    return Method(
        name="fdr",
        config=config,
        init=init,
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
        end_task=lambda state, task, data, key: end_task(config, input_fn, state, task, data, key),
    )
