"""Pieces shared by the classifier-based methods: the network state and its losses."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from cljax.core import buffer as buffer_lib
from cljax.core.config import Hyperparams, hparam
from cljax.methods import Method
from cljax.models.backbones import takes_mask


class NetState(train_state.TrainState):
    """A classifier's `TrainState` plus BatchNorm running statistics (empty for MLPs)."""

    batch_stats: Any = None


@struct.dataclass
class ReplayState:
    """State of the rehearsal methods: the network and the replay buffer."""

    net: NetState
    buffer: buffer_lib.Buffer


def create_net(model, tx, key, x) -> NetState:
    """Initialises `model` on input `x` and wraps it with optimizer `tx`."""
    variables = model.init(key, x, train=False)
    return NetState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
    )


def forward(
    net: NetState, params, x, batch_stats, train: bool = True, active=True, weight=None, **call
):
    """Logits and updated BatchNorm statistics; `active=False` keeps the old statistics;
    `call`: further arguments of the model's `__call__` (`CosineHead`'s `parts`).

    `weight` (`(N,)`, 0 on padding): a model that takes a `mask` (cljax's `resnet18`)
    computes its batch statistics over the items of nonzero weight only, as a reference
    that forwards only the real items (Mammoth's replay while its buffer holds fewer items
    than it draws); other models see every item."""
    if not batch_stats:
        return net.apply_fn({"params": params}, x, train=train, **call), batch_stats
    variables = {"params": params, "batch_stats": batch_stats}
    if not train:
        return net.apply_fn(variables, x, train=False, **call), batch_stats
    extra = {"mask": weight > 0} if weight is not None and _takes_mask(net.apply_fn) else {}
    logits, updates = net.apply_fn(
        variables, x, train=True, mutable=["batch_stats"], **extra, **call
    )
    new_stats = jax.tree.map(
        lambda new, old: jnp.where(active, new, old), updates["batch_stats"], batch_stats
    )
    return logits, new_stats


def _takes_mask(apply_fn) -> bool:
    """Whether the module behind `apply_fn` (a bound `Module.apply`) takes `mask`."""
    module = getattr(apply_fn, "__self__", None)
    return module is not None and takes_mask(module)


def predict(net: NetState, x):
    """Inference logits."""
    logits, _ = forward(net, net.params, x, net.batch_stats, train=False)
    return logits


def penultimate(model):
    """`features(params, batch_stats, x) -> (N, D)`: the input of `model`'s output layer on
    prepared inputs `x`, inference mode (for backbones that return their features with
    `num_classes=None`, whose output layer is their last; Flax keeps definition order)."""
    body = dataclasses.replace(model, num_classes=None)

    def features(params, batch_stats, x):
        params = dict(params)
        params.pop(list(params)[-1])
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        return body.apply(variables, x, train=False)

    return features


def flat_input(input_fn, x, key, train: bool):
    """`input_fn`'s prepared inputs of raw `x`, each flattened to one row (the MLP VAEs')."""
    x = input_fn(x, key, train)
    return x.reshape((x.shape[0], -1))


def predict_with(input_fn):
    """`predict(state, x)` for states whose network is `state.net`."""

    def predict_fn(state, x):
        return predict(state.net, input_fn(x, None, False))

    return predict_fn


def cross_entropy(logits, labels):
    """Per-example softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def masked_mean(values, weights):
    """Mean of `values` over entries with weight 1 (0 when every weight is 0)."""
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def class_mask(classes, num_classes: int):
    """`(num_classes,)` booleans, True at `classes` (a tuple of labels, possibly empty)."""
    return jnp.zeros(num_classes, bool).at[jnp.asarray(classes, jnp.int32)].set(True)


def ce_and_grads(net: NetState, x, y, task_heads: int = 0):
    """Mean cross-entropy of prepared inputs `x` with labels `y` (each item's over its task's
    `task_heads` classes, when > 0), the updated BatchNorm statistics and the loss's gradient
    (for steps that change the gradient before applying it: EWC's and SI's closed-form
    penalties)."""

    def loss_fn(params):
        logits, stats = forward(net, params, x, net.batch_stats)
        return cross_entropy(on_task_heads(logits, y, task_heads), y).mean(), stats

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    return loss, stats, grads


def sgd_update(net: NetState, loss_fn):
    """One optimizer step on `loss_fn(params) -> (loss, (batch_stats, aux))`."""
    (loss, (stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    return net.apply_gradients(grads=grads, batch_stats=stats), loss, aux


def replay_draw(buffer: buffer_lib.Buffer, key, n: int, input_fn, augment: bool = True):
    """`(idx, x, items, valid)`: the slots of `n` items drawn from `buffer`, their inputs
    prepared for training (augmented, unless `augment` is False), their stored fields and
    validity (booleans)."""
    k_idx, k_aug = jax.random.split(key)
    idx, valid = buffer_lib.sample_indices(buffer, k_idx, n)
    items = buffer_lib.gather(buffer, idx)
    x = input_fn(items["x"], k_aug, True) if augment else input_fn(items["x"], None, False)
    return idx, x, items, valid


def replay_batch(state: ReplayState, key, n: int, input_fn, augment: bool = True):
    """`n` buffer items (inputs prepared for training: augmented, unless `augment` is False),
    their stored fields and validity (weights, 1.0 or 0.0)."""
    _, x, items, valid = replay_draw(state.buffer, key, n, input_fn, augment)
    return x, items, valid.astype(jnp.float32)


def shuffled_batches(valid, key, batch_size: int):
    """One epoch over the slots marked in `valid` (booleans): `(idx, counts)`, `idx`
    `(n_batches, batch_size)` the marked slots in a random order cut into consecutive batches
    (the last one short: padded with repeats, as any batch past the items), `counts`
    `(n_batches,)` each batch's real items (fits on a memory: GDumb, LUCIR, BiC)."""
    n_batches = -(-valid.shape[0] // batch_size)
    idx, _ = buffer_lib.sample_valid(valid, key, n_batches * batch_size)
    counts = jnp.clip(jnp.sum(valid) - jnp.arange(n_batches) * batch_size, 0, batch_size)
    return idx.reshape(n_batches, batch_size), counts


def mixed_batch(state, batch, k_cur, k_buf, n: int, input_fn):
    """`(x, y, weight)`: the current batch (training transform) followed by `n` buffer items
    of `state.buffer` (ER's batch; weight 0 on padding while the buffer holds fewer)."""
    buf_x, buf, valid = replay_batch(state, k_buf, n, input_fn)
    x = jnp.concatenate([input_fn(batch["x"], k_cur, True), buf_x])
    y = jnp.concatenate([batch["y"], buf["y"]])
    weight = jnp.concatenate([jnp.ones(batch["y"].shape[0]), valid])
    return x, y, weight


def per_task_share(name: str, buffer_size: int, task) -> int:
    """`buffer_size // task.num_tasks`: the memory items of each task of an episodic memory
    split evenly over the tasks (GEM, A-GEM); a clear error when it cannot be sized."""
    if task.num_tasks < 1:
        raise ValueError(
            f"{name} needs the number of tasks (TaskInfo.num_tasks) to size its memory"
        )
    per_task = buffer_size // task.num_tasks
    if per_task < 1:
        raise ValueError(
            f"buffer_size {buffer_size} is smaller than the {task.num_tasks} tasks; "
            "choose a larger buffer"
        )
    return per_task


def add_task_memory(name: str, state, buffer_size: int, task, task_data, key, balanced: bool):
    """`state` with `buffer_size // num_tasks` items of the task's data (`task_memory_pick`)
    added to its `buffer` at the task's end (the episodic memory of A-GEM and of van de Ven's
    ER)."""
    per_task = per_task_share(name, buffer_size, task)
    x, y = (jnp.asarray(a) for a in task_data)  # numpy from a user's loop too
    k_pick, k_add = jax.random.split(key)
    pick = task_memory_pick(y, task.classes, per_task, k_pick, balanced)
    items = {"x": x[pick], "y": y[pick].astype(jnp.int32)}
    return state.replace(buffer=buffer_lib.add(state.buffer, items, k_add))


def task_memory_pick(y, classes, n: int, key, balanced: bool):
    """Indices of `n` items of a task (labels `y`) for an episodic memory: drawn at random
    from the whole task, or (`balanced`) `n // len(classes)` at random from each of its
    `classes` (van de Ven et al.'s memory: a budget per class; `n % len(classes)` fewer, and a
    class with fewer items than its share is filled up with other items of the task)."""
    if not balanced:
        return jax.random.permutation(key, y.shape[0])[:n]
    share = n // len(classes)
    noise = jax.random.uniform(key, y.shape)
    picks = []
    for c in classes:  # a random order within class c, its items first
        order = jnp.argsort(jnp.where(y == c, noise, 2.0 + noise))
        picks.append(order[:share])
    return jnp.concatenate(picks)


def replay_init(model, tx, input_fn, buffer_size: int):
    """`init(key, example_x) -> ReplayState`: the network and an empty reservoir of raw
    inputs and labels."""

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        example = {"x": example_x[0], "y": jnp.zeros((), jnp.int32)}
        return ReplayState(net=net, buffer=buffer_lib.init(buffer_size, example))

    return init


def count_params(tree) -> int:
    """Number of scalars in a pytree (parameter counts for `describe`)."""
    return int(sum(np.size(a) for a in jax.tree.leaves(tree)))


def task_heads_of(y, num_classes: int, per_task: int):
    """`(B, C)` booleans: True at the classes of each label's task, on a benchmark whose
    tasks hold `per_task` consecutive classes (van de Ven et al.'s task-IL training, a head
    per task: an item's softmax runs over its own task's classes)."""
    return (jnp.arange(num_classes)[None, :] // per_task) == (y // per_task)[:, None]


def on_heads(logits, heads):
    """`logits` with the entries outside `heads` (booleans of the same shape, or None: every
    entry) pushed to -1e9: a softmax over the heads only, no gradient outside them."""
    return logits if heads is None else jnp.where(heads, logits, -1e9)


def on_task_heads(logits, y, per_task: int):
    """`logits` on each label's task head of `per_task` classes (`task_heads_of`), or as they
    are when `per_task` is 0 (the `task_heads` setting off)."""
    if not per_task:
        return logits
    return on_heads(logits, task_heads_of(y, logits.shape[-1], per_task))


TASK_HEADS_DOC = (
    "k > 0: train each item's softmax on its own task's k consecutive classes (a head per "
    "task: van de Ven et al.'s task-IL training; score task-IL); 0: on every output"
)


OPTIMIZER_DOC = "sgd (Mammoth's) or adam (betas 0.9, 0.999: van de Ven et al.'s code)"


def optimizer_hparam(default: str = "sgd"):
    """The `optimizer` setting of a method that offers both (`optimizer(name, lr)`)."""
    return hparam(default, OPTIMIZER_DOC, choices=("sgd", "adam"))


def optimizer(name: str, lr: float):
    """Plain SGD, or Adam with PyTorch's defaults (betas 0.9, 0.999, eps 1e-8), at `lr`."""
    if name == "adam":
        return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
    return optax.sgd(lr)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(Hyperparams):
    """Settings of a classifier trained on cross-entropy (`sgd`, `joint`)."""

    lr: float = hparam(0.03, "step size", gt=0)
    optimizer: str = optimizer_hparam()
    task_heads: int = hparam(0, TASK_HEADS_DOC, ge=0)


@dataclasses.dataclass(frozen=True)
class ReplayConfig(Hyperparams):
    """Settings every rehearsal method with a reservoir buffer has."""

    lr: float = hparam(0.1, "SGD step size", gt=0)
    buffer_size: int = hparam(500, "replay buffer capacity (items)", ge=1)
    minibatch_size: int = hparam(10, "buffer items replayed per step", ge=1)


@struct.dataclass
class NetOnlyState:
    """Just the network (`sgd`, `joint`)."""

    net: NetState


def finetune_step(input_fn, state: NetOnlyState, batch, key, task_heads: int = 0):
    """One optimizer step on the cross-entropy of the current batch (each item's over its
    task's `task_heads` classes, when > 0)."""
    x = input_fn(batch["x"], key, True)

    def loss_fn(params):
        logits, stats = forward(state.net, params, x, state.net.batch_stats)
        logits = on_task_heads(logits, batch["y"], task_heads)
        return cross_entropy(logits, batch["y"]).mean(), (stats, None)

    net, loss, _ = sgd_update(state.net, loss_fn)
    return NetOnlyState(net=net), {"loss": loss}


def make_finetune(name: str, config: FinetuneConfig, *, model, input_fn):
    """A classifier trained by cross-entropy on whatever batches the driver feeds it."""
    tx = optimizer(config.optimizer, config.lr)

    def init(key, example_x):
        return NetOnlyState(net=create_net(model, tx, key, input_fn(example_x, key, False)))

    return Method(
        name=name,
        config=config,
        init=init,
        train_step=lambda state, batch, key: finetune_step(
            input_fn, state, batch, key, config.task_heads
        ),
        predict=predict_with(input_fn),
    )


@dataclasses.dataclass(frozen=True)
class DarkConfig(ReplayConfig):
    """Settings of Dark Experience Replay (`der`; `derpp` adds `beta`)."""

    lr: float = hparam(0.03, "SGD step size", gt=0)
    alpha: float = hparam(1.0, "weight of the logit MSE (the paper's alpha)", ge=0)


def dark_step(config: DarkConfig, input_fn, state: ReplayState, batch, key):
    """One DER step (DER++ when `config` has `beta`: a CE on a second, independent draw)."""
    beta = getattr(config, "beta", None)
    k_cur, k_mse, k_ce, k_add = jax.random.split(key, 4)
    x = input_fn(batch["x"], k_cur, True)
    mse_x, mse_items, mse_valid = replay_batch(state, k_mse, config.minibatch_size, input_fn)
    if beta is not None:
        ce_x, ce_items, ce_valid = replay_batch(state, k_ce, config.minibatch_size, input_fn)
    active = state.buffer.num_seen > 0

    def loss_fn(params):
        logits, stats = forward(state.net, params, x, state.net.batch_stats)
        loss = cross_entropy(logits, batch["y"]).mean()
        out, stats = forward(state.net, params, mse_x, stats, active=active, weight=mse_valid)
        mse = jnp.mean((out - mse_items["logits"]) ** 2, axis=-1)
        loss = loss + config.alpha * masked_mean(mse, mse_valid)
        if beta is not None:
            out, stats = forward(state.net, params, ce_x, stats, active=active, weight=ce_valid)
            loss = loss + beta * masked_mean(cross_entropy(out, ce_items["y"]), ce_valid)
        return loss, (stats, logits)

    net, loss, logits = sgd_update(state.net, loss_fn)
    offered = {"x": batch["x"], "y": batch["y"], "logits": jax.lax.stop_gradient(logits)}
    new_buffer = buffer_lib.add(state.buffer, offered, k_add)
    return ReplayState(net=net, buffer=new_buffer), {"loss": loss}


def make_dark(name: str, config: DarkConfig, *, model, input_fn) -> Method:
    """DER or DER++ (by `config`) as a `Method`."""
    tx = optax.sgd(config.lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        logits = predict(net, input_fn(example_x, None, False))
        example = {"x": example_x[0], "y": jnp.zeros((), jnp.int32), "logits": logits[0]}
        return ReplayState(net=net, buffer=buffer_lib.init(config.buffer_size, example))

    return Method(
        name=name,
        config=config,
        init=init,
        train_step=lambda state, batch, key: dark_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
    )
