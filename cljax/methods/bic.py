"""BiC (`bic`): Wu, Chen, Wang, Ye, Liu, Guo and Fu, *Large Scale Incremental Learning*,
CVPR 2019 (arXiv 1905.13260), as Mammoth runs it (`models/bic.py`, e75a491).

Exemplars are shuffled into each task's training data (the driver's pool, as iCaRL); from
the second task on, a small validation set is held out of both (a `valset_split` share of
the exemplars and as many random items of the task), the network distils the previous
one, and after the task a two-parameter bias correction of the new classes' logits,
`alpha * z + beta`, is learned on the validation set. Loss:
(1 - lambda) CE(z[:seen], y) + lambda T^2 KL-style(softmax(z_old[:past] / T), z[:past] / T),
lambda = 1 / (t + 1).

As Mammoth: the teacher is the network of the previous task's end in inference mode, its
newest classes' logits corrected by that task's bias layer (`distill_after_bic`); the
cross-entropy sees the classes seen so far, the distillation the past ones (the sum of
`-p_old log p` over them, mean over items); the bias layer (beta 0, alpha 1) is trained by
Adam (lr 1e-3) for `bic_epochs` epochs over the validation set in batches of
`bic_batch_size` (training transform, inference-mode logits, the cross-entropy over the
classes seen) and corrects the task's classes when predicting, until the next task starts;
the optimizer starts afresh each task. The memory, as its `build_buffer`: after task t,
each group of items added after the same task keeps its first `buffer_size // t` (t > 1),
then the first `buffer_size // t` (all of it after the first task) of a fresh shuffle of
the task's training data, exemplars included, are offered to the reservoir.

Deviations: Mammoth draws each exemplar into the validation set with probability
`valset_split`; we hold out exactly `round(valset_split * stored)` of them (random which),
so that every seed adds as many exemplars to its task and seeds train side by side. The
held-out items of the task are left out of its batches by weight 0 (their pixels'
checksum), which keeps the batch's other items' mean: Mammoth's loader never yields them.
We replay the stored raw pixels; Mammoth's float-to-uint8 refold of its exemplars can lower
a pixel by one level. The draws come from JAX keys.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax.core import buffer as buffer_lib
from cljax.core.config import Hyperparams, hparam
from cljax.methods import CLASS_SPLIT_SETTINGS, Method, Needs, TaskInfo, configure
from cljax.methods.common import (
    NetState,
    class_mask,
    create_net,
    cross_entropy,
    forward,
    masked_mean,
    predict,
    shuffled_batches,
)

TEST_CONFIG = {"buffer_size": 16, "bic_epochs": 3, "bic_batch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    lr: float = hparam(0.1, "SGD step size", gt=0)
    buffer_size: int = hparam(500, "exemplar memory capacity (items)", ge=1)
    temp: float = hparam(2.0, "distillation temperature T", gt=0)
    valset_split: float = hparam(
        0.1, "share of the exemplars held out for the bias layer", ge=0, le=1
    )
    bic_epochs: int = hparam(250, "epochs of the bias layer's training", ge=0)
    bic_batch_size: int = hparam(
        128, "batch of the bias layer's training (Mammoth: the run's)", ge=1
    )
    distill_after_bic: bool = hparam(True, "correct the teacher's newest classes by its bias layer")


@struct.dataclass
class State:
    net: NetState
    teacher: dict
    teacher_stats: dict
    memory: buffer_lib.Buffer  # {"x", "y", "tl": the task after which it was added, minus 1}
    val: jax.Array  # (cap,) exemplars held out this task
    held_idx: jax.Array  # (cap,) indices of the task's held-out items
    held_hash: jax.Array  # (cap,) their pixels' checksums
    held_valid: jax.Array  # (cap,)
    corr: jax.Array  # (2,) beta, alpha of the bias layer
    has_corr: jax.Array
    old_corr: jax.Array
    has_old_corr: jax.Array
    current: jax.Array  # (C,) classes of the current task
    previous: jax.Array  # (C,) classes of the task before
    past: jax.Array  # (C,) classes of the earlier tasks
    lamda: jax.Array


def checksum(x):
    """An exact per-item checksum of raw pixels (uint32 arithmetic wraps, order-free)."""
    flat = x.reshape(x.shape[0], -1).astype(jnp.uint32)
    weights = jax.random.bits(jax.random.key(7), (flat.shape[1],), jnp.uint32) | 1
    return jnp.sum(flat * weights[None, :], axis=1, dtype=jnp.uint32)


def correct(logits, corr, classes):
    """`alpha * z + beta` on the columns marked in `classes`."""
    return jnp.where(classes, corr[1] * logits + corr[0], logits)


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """BiC with SGD at `lr`, `buffer_size` exemplars, distillation at `temp` and Mammoth's
    bias layer."""
    config = configure(Config, config, overrides)
    num_classes = model.num_classes
    tx = optax.sgd(config.lr)
    bias_tx = optax.adam(1e-3)
    cap = config.buffer_size

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        example = {"x": example_x[0], "y": jnp.zeros((), jnp.int32), "tl": jnp.zeros((), jnp.int32)}
        none = jnp.zeros(num_classes, bool)
        return State(
            net=net,
            teacher=net.params,
            teacher_stats=net.batch_stats,
            memory=buffer_lib.init(cap, example),
            val=jnp.zeros(cap, bool),
            held_idx=jnp.zeros(cap, jnp.int32),
            held_hash=jnp.zeros(cap, jnp.uint32),
            held_valid=jnp.zeros(cap, bool),
            corr=jnp.asarray([0.0, 1.0]),
            has_corr=jnp.zeros((), bool),
            old_corr=jnp.asarray([0.0, 1.0]),
            has_old_corr=jnp.zeros((), bool),
            current=none,
            previous=none,
            past=none,
            lamda=jnp.zeros((), jnp.float32),
        )

    def begin_task(state: State, task: TaskInfo, key) -> State:
        del key
        past = tuple(c for c in task.seen if c not in task.classes)
        net = state.net.replace(opt_state=state.net.tx.init(state.net.params))
        if task.index > 0:
            state = state.replace(
                teacher=net.params,
                teacher_stats=net.batch_stats,
                old_corr=state.corr,
                has_old_corr=state.has_corr,
                lamda=jnp.asarray(1.0 / (task.index + 1), jnp.float32),
            )
        return state.replace(
            net=net,
            has_corr=jnp.zeros((), bool),
            previous=state.current,
            current=class_mask(task.classes, num_classes),
            past=class_mask(past, num_classes),
        )

    def begin_task_data(state: State, task: TaskInfo, data, key) -> State:
        """The validation set: `round(valset_split * stored)` exemplars and as many random
        items of the task, both left out of the task's training."""
        if task.index == 0:
            return state
        x, _ = data
        k_val, k_held = jax.random.split(key)
        stored = jnp.arange(cap) < state.memory.size
        n_val = jnp.round(config.valset_split * state.memory.size).astype(jnp.int32)
        order, ok = buffer_lib.sample_valid(stored, k_val, cap)  # repeats past the stored
        chosen = ((jnp.arange(cap) < n_val) & ok).astype(jnp.int32)
        val = jnp.zeros(cap, jnp.int32).at[order].max(chosen) > 0
        held = jax.random.permutation(k_held, x.shape[0])[: min(cap, x.shape[0])]
        held = jnp.concatenate([held, jnp.zeros(cap - held.shape[0], held.dtype)])
        valid = jnp.arange(cap) < n_val
        return state.replace(
            val=val,
            held_idx=held.astype(jnp.int32),
            held_hash=checksum(jnp.asarray(x)[held]),
            held_valid=valid,
        )

    def train_pool(state: State, example_x=None):
        del example_x
        stored = jnp.arange(cap) < state.memory.size
        return state.memory.data["x"], state.memory.data["y"], stored & ~state.val

    def train_step(state: State, batch, key):
        x = input_fn(batch["x"], key, True)
        y = batch["y"]
        h = checksum(batch["x"])
        held_out = jnp.any((h[:, None] == state.held_hash[None, :]) & state.held_valid[None], 1)
        weight = 1.0 - held_out.astype(jnp.float32)
        net = state.net
        seen = state.past | state.current
        old, _ = forward(net, state.teacher, x, state.teacher_stats, train=False)
        fix = config.distill_after_bic & state.has_old_corr
        old = jnp.where(fix, correct(old, state.old_corr, state.previous), old)
        # over the past classes (every class in the first task, where lambda is 0: no NaN)
        past = state.past | ~jnp.any(state.past)
        p_old = jax.nn.softmax(jnp.where(past, old / config.temp, -jnp.inf))
        t2 = config.temp**2

        def loss_fn(params):
            z, stats = forward(net, params, x, net.batch_stats, weight=weight)
            ce = masked_mean(cross_entropy(jnp.where(seen, z, -jnp.inf), y), weight)
            log_p = jax.nn.log_softmax(jnp.where(past, z / config.temp, -jnp.inf))
            dist = masked_mean(-jnp.sum(jnp.where(past, p_old * log_p, 0.0), -1), weight)
            return (1 - state.lamda) * ce + state.lamda * dist * t2, stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
        net = net.apply_gradients(grads=grads, batch_stats=stats)
        return state.replace(net=net), {"loss": loss}

    def train_bias(state: State, x_task, y_task, key) -> State:
        """The bias layer on the validation set (the task's held-out items and exemplars)."""
        vx = jnp.concatenate([jnp.asarray(x_task)[state.held_idx], state.memory.data["x"]])
        held_y = jnp.asarray(y_task)[state.held_idx].astype(jnp.int32)
        vy = jnp.concatenate([held_y, state.memory.data["y"]])
        vvalid = jnp.concatenate([state.held_valid, state.val])
        bs = config.bic_batch_size
        seen = state.past | state.current

        def step(carry, inp):
            corr, opt = carry
            xb, yb, wb, k = inp
            z = predict(state.net, input_fn(xb, k, True))

            def loss_fn(c):
                out = jnp.where(seen, correct(z, c, state.current), -jnp.inf)
                return masked_mean(cross_entropy(out, yb), wb)

            grads = jax.grad(loss_fn)(corr)
            updates, new_opt = bias_tx.update(grads, opt, corr)
            keep = jnp.any(wb > 0)
            new = (optax.apply_updates(corr, updates), new_opt)
            return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, (corr, opt)), None

        def epoch(carry, k):
            k_order, k_steps = jax.random.split(k)
            idx, counts = shuffled_batches(vvalid, k_order, bs)
            weights = (jnp.arange(bs)[None, :] < counts[:, None]).astype(jnp.float32)
            keys = jax.random.split(k_steps, idx.shape[0])
            return jax.lax.scan(step, carry, (vx[idx], vy[idx], weights, keys))[0], None

        corr = jnp.asarray([0.0, 1.0])
        (corr, _), _ = jax.lax.scan(
            epoch, (corr, bias_tx.init(corr)), jax.random.split(key, config.bic_epochs)
        )
        return state.replace(corr=corr, has_corr=jnp.ones((), bool))

    def build_memory(state: State, task: TaskInfo, x, y, key) -> State:
        """Mammoth's `build_buffer` (see the module's docstring)."""
        t = task.index
        per_task = cap // t if t > 0 else cap
        memory = state.memory
        stored = jnp.arange(cap) < memory.size
        if t > 1:  # each group of items added after one task keeps its first `per_task`
            memory = buffer_lib.keep_first_per_group(memory, memory.data["tl"], per_task)
        k_order, k_add = jax.random.split(key)
        n = x.shape[0]
        task_ok = jnp.ones(n, bool)
        pool_ok = jnp.zeros(cap, bool)
        if t > 0:  # the task's training data: its items but the held-out ones, the exemplars
            held = (
                jnp.zeros(n, jnp.int32).at[state.held_idx].max(state.held_valid.astype(jnp.int32))
            )
            task_ok = held == 0
            pool_ok = stored & ~state.val
        mx = jnp.concatenate([jnp.asarray(x), state.memory.data["x"]])
        my = jnp.concatenate([jnp.asarray(y).astype(jnp.int32), state.memory.data["y"]])
        if t == 0:  # never more than the task's items (later tasks have these and exemplars)
            per_task = min(per_task, n)
        idx, _ = buffer_lib.sample_valid(jnp.concatenate([task_ok, pool_ok]), k_order, per_task)
        items = {"x": mx[idx], "y": my[idx], "tl": jnp.full(per_task, t - 1, jnp.int32)}
        return state.replace(memory=buffer_lib.add(memory, items, k_add))

    def end_task(state: State, task: TaskInfo, data, key) -> State:
        x, y = data
        k_bias, k_mem = jax.random.split(key)
        if task.index > 0:
            state = train_bias(state, x, y, k_bias)
        return build_memory(state, task, x, y, k_mem)

    def predict_fn(state: State, x):
        z = predict(state.net, input_fn(x, None, False))
        return jnp.where(state.has_corr, correct(z, state.corr, state.current), z)

    return Method(
        name="bic",
        config=config,
        init=init,
        begin_task=begin_task,
        begin_task_data=begin_task_data,
        train_step=train_step,
        end_task=end_task,
        predict=predict_fn,
        train_pool=train_pool,
        needs=Needs(settings=CLASS_SPLIT_SETTINGS, pool_capacity=cap),
    )
