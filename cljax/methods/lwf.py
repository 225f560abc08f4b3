"""Learning without Forgetting (`lwf`): Li & Hoiem, ECCV 2016 / TPAMI 2017, as the DER
paper ran it (Mammoth's `models/lwf.py` of the paper's release, commit 7ab9db9).

At the start of each task after the first, the network's output layer alone is
warmed up on the new task (plain SGD at `lr`, `n_epochs` over the task's data,
the features frozen, cross-entropy over the new task's classes), and the network
is then frozen as the teacher. Each step minimises

    CE(f(x)[seen], y) + alpha * KD(teacher(x)[past], f(x)[past]) + wd_reg * |theta|^2

where `[seen]` keeps the logits of the classes seen so far, `[past]` those of the
earlier tasks, and `KD(p, q) = -mean_n sum_c s(p)_c log s(q)_c` with
`s(p) = softmax(p)^(1/T) / sum softmax(p)^(1/T)` at temperature `T` (Mammoth's
`smooth(..., 2, 1)`; `softmax_temp` is 2, as its code fixes it).

The teacher runs as Mammoth's does (5dc82be `models/lwf.py:52-78`, `self.net.eval()`
for the warm-up and the stored logits): in inference mode, with the BatchNorm
statistics it had when the task began (the warm-up, in inference mode too, does
not move them), kept in the state beside its parameters. They are not the
student's running statistics, which move with every step of the new task.

Where this deviates from Mammoth, and why:
- Mammoth stores the teacher's logits of every training item when the task
  begins and reads them with each batch; here the frozen teacher's parameters
  and statistics are kept in the state and its logits computed on the batch's
  un-augmented inputs in the step. The values are the same (the teacher does
  not change within a task); it costs one forward pass a step instead of memory
  per item.
- Mammoth's un-augmented inputs are its `not_aug_transform`'s, `ToTensor()`
  alone: on CIFAR and Tiny ImageNet its teacher sees images without the
  normalisation the network trains on. Ours sees the test transform's
  (normalised) inputs. MNIST has no normalisation: the same there.
- The warm-up's batches are drawn by the driver's shuffle (`cljax.train`'s
  schedule), not PyTorch's, and run in `begin_task_data` inside `jit`.

As van de Ven et al.'s code runs it (GMvandeVen/continual-learning e6d795a, `--lwf`:
`replay="current"` with `distill`, `models/classifier.py` `train_a_batch` and
`train/train_task_based.py`; its `split-mnist*` rows): `columns="all"`, `warmup=false`,
`optimizer=adam`, `wd_reg=0`, `alpha=1`, temperature 2. There the teacher is the network as
the previous task ended; the CE and the distillation run over every output (its class-IL
"all" active classes; domain-IL's two), and the distillation, `-sum_c softmax(t / T)_c
log softmax(s / T)_c` (Mammoth's `smooth` of the softmax is the same softmax at `T`), is
computed from log-probabilities as that code does, weighted by the number of earlier tasks in
domain-IL (`past_weight`: its `lwf_weighting`,
which spares class-IL). With `task_heads` (its task-IL), the CE runs over the item's task
head and the distillation over each earlier task's head in turn, averaged over those tasks
and weighted by their number: summed. Where this deviates from that code: nothing known.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax.core.config import Hyperparams, hparam
from cljax.methods import Method, TaskInfo, configure
from cljax.methods.common import (
    TASK_HEADS_DOC,
    NetState,
    class_mask,
    create_net,
    cross_entropy,
    forward,
    on_task_heads,
    optimizer,
    optimizer_hparam,
    predict_with,
)

NEG = -1e9  # logit of a class outside the kept columns (finite: softmax stays defined)


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    """Settings of `lwf`."""

    lr: float = hparam(0.03, "SGD step size (also of the warm-up)", gt=0)
    alpha: float = hparam(1.0, "weight of the distillation term", ge=0)
    softmax_temp: float = hparam(2.0, "temperature of the distillation's smoothing", gt=0)
    wd_reg: float = hparam(0.0005, "L2 penalty on every parameter, in the loss", ge=0)
    columns: str = hparam(
        "seen",
        "seen: CE over the classes seen so far, distillation over the earlier tasks' (Mammoth); "
        "all: both over every output (van de Ven et al.'s code)",
        choices=("seen", "all"),
    )
    warmup: bool = hparam(True, "warm the output layer up on each new task first (Mammoth)")
    past_weight: bool = hparam(
        False, "weight the distillation by the number of earlier tasks (van de Ven's domain-IL)"
    )
    optimizer: str = optimizer_hparam()
    task_heads: int = hparam(0, TASK_HEADS_DOC, ge=0)


@struct.dataclass
class LwfState:
    """The network, the frozen teacher and the class masks of the current task."""

    net: NetState
    teacher: dict  # the network's params after the warm-up of the current task
    teacher_stats: dict  # its BatchNorm statistics then, frozen with them ({} for MLPs)
    seen: jax.Array  # (C,) classes of tasks 0..t
    past: jax.Array  # (C,) classes of tasks 0..t-1 (none in the first task)
    past_tasks: jax.Array  # () the number of earlier tasks, t


def smooth(probs, temp, mask):
    """Mammoth's `smooth`: `probs^(1/temp)` renormalised over the `mask` columns."""
    powered = jnp.where(mask, probs, 0.0) ** (1.0 / temp)
    return powered / jnp.sum(powered, -1, keepdims=True)


def distillation(teacher_logits, logits, mask, temp):
    """`-mean_n sum_{c in mask} s(teacher)_c log s(student)_c` over the `mask` columns."""
    old = smooth(jax.nn.softmax(jnp.where(mask, teacher_logits, NEG)), temp, mask)
    new = smooth(jax.nn.softmax(jnp.where(mask, logits, NEG)), temp, mask)
    terms = jnp.where(mask, old * jnp.log(jnp.where(mask, new, 1.0)), 0.0)
    return -jnp.mean(jnp.sum(terms, -1))


def log_distillation(teacher_logits, logits, mask, temp):
    """`-mean_n sum_{c in mask} softmax(t / T)_c log softmax(s / T)_c` over the `mask` columns,
    from log-probabilities (van de Ven et al.'s `loss_fn_kd`): the same value as
    `distillation`, whose powers of probabilities underflow to 0 where the student is sure
    (the square root's infinite slope there: NaN gradients; an Adam split-mnist run diverged)."""
    old = jax.nn.softmax(jnp.where(mask, teacher_logits, NEG) / temp)
    log_new = jax.nn.log_softmax(jnp.where(mask, logits, NEG) / temp)
    return -jnp.mean(jnp.sum(jnp.where(mask, old * log_new, 0.0), -1))


def head_distillation(teacher_logits, logits, past, k: int, temp):
    """The distillation over each earlier task's head of `k` classes, summed over those
    tasks (van de Ven et al.'s task-IL: averaged over them, times their number)."""
    heads = jnp.arange(past.shape[0]) // k
    total = 0.0
    for h in range(past.shape[0] // k):
        mask = heads == h
        kd = log_distillation(teacher_logits, logits, mask, temp)
        total = total + jnp.where(jnp.any(past & mask), kd, 0.0)
    return total


def train_step(config: Config, input_fn, state: LwfState, batch, key):
    """CE over the seen classes (or every output, or the item's head), distillation on the
    past ones (or every output, or each earlier head) from the second task, L2."""
    x = input_fn(batch["x"], key, True)
    plain = input_fn(batch["x"], None, False)
    net = state.net
    teacher, _ = forward(net, state.teacher, plain, state.teacher_stats, train=False)
    every = jnp.ones_like(state.seen)
    ce_mask = state.seen if config.columns == "seen" else every
    kd_mask = state.past if config.columns == "seen" else every
    has_past = (state.past_tasks > 0) & kd_mask.any()
    weight = config.alpha * (state.past_tasks if config.past_weight else 1.0)

    def loss_fn(params):
        logits, stats = forward(net, params, x, net.batch_stats)
        if config.task_heads:
            k = config.task_heads
            ce = cross_entropy(on_task_heads(logits, batch["y"], k), batch["y"]).mean()
            kd = head_distillation(teacher, logits, state.past, k, config.softmax_temp)
        else:
            ce = cross_entropy(jnp.where(ce_mask, logits, NEG), batch["y"]).mean()
            kd_fn = distillation if config.columns == "seen" else log_distillation
            kd = kd_fn(teacher, logits, kd_mask, config.softmax_temp)
        kd = jnp.where(has_past, kd, 0.0)
        l2 = sum(jnp.sum(p**2) for p in jax.tree.leaves(params))
        return ce + weight * kd + config.wd_reg * l2, (stats, ce, kd)

    (loss, (stats, ce, kd)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    net = net.apply_gradients(grads=grads, batch_stats=stats)
    return state.replace(net=net), {"loss": loss, "ce": ce, "kd": kd}


def begin_task(config: Config, state: LwfState, task: TaskInfo, key) -> LwfState:
    """The class masks of task `task`; the teacher is set after the warm-up."""
    del config, key
    past = tuple(c for c in task.seen if c not in task.classes)
    num_classes = state.seen.shape[0]
    return state.replace(
        seen=class_mask(task.seen, num_classes),
        past=class_mask(past, num_classes),
        past_tasks=jnp.asarray(task.index, jnp.int32),
    )


def head_name(params) -> str:
    """The output layer's name: the network's last layer (Flax keeps definition order)."""
    return list(params)[-1]


def warm_up(config: Config, input_fn, state: LwfState, task: TaskInfo, task_data, key):
    """From the second task: the output layer alone trained on the task (plain SGD at `lr`,
    `task.epochs` passes in batches of `task.batch_size`, features frozen, CE over the
    task's classes); then the network becomes the teacher, its parameters and BatchNorm
    statistics frozen (inference mode throughout, as Mammoth's `self.net.eval()`)."""
    if task.index > 0 and config.warmup:
        x_raw, y = (jnp.asarray(a) for a in task_data)  # numpy from a user's loop too
        n, batch = y.shape[0], task.batch_size or 32
        per_epoch = math.ceil(n / batch)
        current = class_mask(task.classes, state.seen.shape[0])
        head = head_name(state.net.params)
        tx = optax.sgd(config.lr)
        net = state.net

        def step(carry, inputs):
            params, opt_state = carry
            idx, k = inputs
            live = idx >= 0
            xb = input_fn(x_raw[jnp.maximum(idx, 0)], k, True)  # the training transform

            def loss_fn(head_params):
                logits, _ = forward(net, {**params, head: head_params}, xb, net.batch_stats, False)
                ce = cross_entropy(jnp.where(current, logits, NEG), y[jnp.maximum(idx, 0)])
                return jnp.sum(ce * live) / jnp.maximum(live.sum(), 1)

            grads = jax.grad(loss_fn)(params[head])
            updates, opt_state = tx.update(grads, opt_state, params[head])
            return ({**params, head: optax.apply_updates(params[head], updates)}, opt_state), None

        def epoch(carry, k):
            k_order, k_aug = jax.random.split(k)
            order = jax.random.permutation(k_order, n)
            order = jnp.concatenate([order, -jnp.ones(per_epoch * batch - n, order.dtype)])
            batches = (order.reshape(per_epoch, batch), jax.random.split(k_aug, per_epoch))
            return jax.lax.scan(step, carry, batches)[0], None

        epochs = max(task.epochs, 1)
        params = net.params
        (params, _), _ = jax.lax.scan(
            epoch, (params, tx.init(params[head])), jax.random.split(key, epochs)
        )
        state = state.replace(net=net.replace(params=params))
    return state.replace(teacher=state.net.params, teacher_stats=state.net.batch_stats)


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """LwF with SGD (or Adam) at `lr`, distillation weight `alpha` and L2 weight `wd_reg`."""
    config = configure(Config, config, overrides)
    tx = optimizer(config.optimizer, config.lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        classes = jnp.zeros(model.num_classes, bool)
        return LwfState(
            net=net,
            teacher=net.params,
            teacher_stats=net.batch_stats,
            seen=classes,
            past=classes,
            past_tasks=jnp.zeros((), jnp.int32),
        )

    return Method(
        name="lwf",
        config=config,
        init=init,
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
        begin_task=lambda state, task, key: begin_task(config, state, task, key),
        begin_task_data=lambda state, task, data, key: warm_up(
            config, input_fn, state, task, data, key
        ),
    )
