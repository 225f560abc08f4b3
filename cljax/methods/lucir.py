"""LUCIR (`lucir`): Hou, Pan, Loy, Wang and Lin, *Learning a Unified Classifier Incrementally
via Rebalancing*, CVPR 2019, as Mammoth runs it (`models/lucir.py`, e75a491).

A cosine classifier `sigma * cos(f(x), w_c)` (sigma learned, one weight row per class of
the run, allocated at the start), exemplars chosen by herding and shuffled into each task's
training data (the driver's pool, as iCaRL), and from the second task on three terms. Loss:
CE(sigma * cos, y) + lambda_t * mean(1 - cos(f(x), f_old(x)))
+ lamda_mr * mean over old-class items and their K hardest new classes of
max(0, mr_margin - cos_y + cos_k).

As Mammoth: only the backbone, sigma and the current task's weight rows learn (the other
rows are frozen: the optimizer does not see them); at a task's start those rows are
imprinted, each the normalised mean of its class's normalised features (inference mode, on
the training transform of the task's items) times the mean norm of the rows of the classes
seen before; the optimizer starts afresh each task. The cross-entropy and the K hardest
columns range over every class of the run, the not-yet-seen ones included (the "new"
columns are every class not of a past task). `f_old` are the features of the
network of the previous task's end, before its fine-tuning, in inference mode. At each
task's end: that network is kept, the memory is rebuilt (`buffer_size // classes seen` a
class; the old classes keep their first ones in herding order, the new ones are chosen by
herding on raw features of their un-augmented items), and the classifier is fine-tuned on
the memory alone (class-balanced fine-tuning): `fitting_epochs` epochs of the same loss at
lr `lr_finetune`, x0.1 after 10 steps, only sigma and the current rows moving, BatchNorm
on batch statistics without updating its running ones.

`lambda_t`: the paper's `lamda_base * sqrt(old classes / new classes)` (`lamda_schedule=
paper`, default), or Mammoth's `lamda_base * sqrt(t - 1)` for task t >= 1 (`mammoth`: its
`end_task` sets the value for the next task from its own index), 0 in the second task.

Deviations from the paper (kept from Mammoth): features after the backbone's last ReLU; the
hard negatives include the not-yet-seen classes' (random) rows. The draws come from JAX keys.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax.core import exemplars
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
from cljax.models.dyn_expand import chunked
from cljax.models.heads import CosineHead

TEST_CONFIG = {"buffer_size": 16, "fitting_epochs": 2, "fit_batch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    lr: float = hparam(0.1, "SGD step size", gt=0)
    buffer_size: int = hparam(500, "exemplar memory capacity (items, split evenly by class)", ge=1)
    optim_mom: float = hparam(
        0.0, "SGD momentum (restarted each task; 0: none)", ge=0, sweepable=False
    )
    optim_wd: float = hparam(0.0, "weight decay of the learning parameters", ge=0)
    lamda_base: float = hparam(5.0, "weight of the less-forget feature distillation", ge=0)
    lamda_schedule: str = hparam(
        "paper",
        "lambda_t: lamda_base * sqrt(old / new classes) (the paper) or * sqrt(t - 1) (Mammoth)",
        choices=("paper", "mammoth"),
    )
    lamda_mr: float = hparam(1.0, "weight of the margin ranking loss", ge=0)
    k_mr: int = hparam(2, "hard negatives per old-class item (K)", ge=1)
    mr_margin: float = hparam(0.5, "margin of the ranking loss", ge=0)
    fitting_epochs: int = hparam(20, "epochs of class-balanced fine-tuning (0: none)", ge=0)
    lr_finetune: float = hparam(0.01, "fine-tuning step size (x0.1 after 10 steps)", gt=0)
    fit_batch_size: int = hparam(128, "fine-tuning batch size (Mammoth: the run's)", ge=1)
    imprint_weights: bool = hparam(True, "imprint the new classes' rows from their features")


def cosine(a, b, eps: float = 1e-12):
    """torch's `cosine_embedding_loss` similarity: `a.b / sqrt((|a|^2 + eps)(|b|^2 + eps))`,
    with a finite gradient at an all-zero row (common after a ReLU)."""
    return jnp.sum(a * b, -1) / jnp.sqrt((jnp.sum(a * a, -1) + eps) * (jnp.sum(b * b, -1) + eps))


@struct.dataclass
class State:
    net: NetState
    teacher: dict  # params of the network at the previous task's end (before fine-tuning)
    teacher_stats: dict
    memory: exemplars.Memory
    current: jax.Array  # (C,) classes of the current task
    past: jax.Array  # (C,) classes of the earlier tasks
    lamda: jax.Array  # lambda_t of the current task


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """LUCIR with SGD at `lr`, `buffer_size` herded exemplars, the less-forget, margin
    ranking and class-balanced fine-tuning settings of Mammoth."""
    config = configure(Config, config, overrides)
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise ValueError("lucir needs a backbone with a num_classes field (None: its features)")
    net_model = CosineHead(
        dataclasses.replace(model, num_classes=None),
        num_classes,
        1.0,
        learn_scale=True,
        eps=1e-12,
    )
    sgd = optax.sgd(config.lr, momentum=config.optim_mom or None)
    tx = optax.chain(optax.add_decayed_weights(config.optim_wd), sgd)
    ft_lr = optax.piecewise_constant_schedule(config.lr_finetune, {10: 0.1})
    ft_tx = optax.chain(
        optax.add_decayed_weights(config.optim_wd),
        optax.sgd(ft_lr, momentum=config.optim_mom or None),
    )

    def parts(net: NetState, params, stats, x, train, weight=None):
        """`(features, cosines, scale, new BatchNorm statistics)` of `net`'s head at `params`
        (`common.forward`: padding of weight 0 out of the batch statistics)."""
        out, stats = forward(net, params, x, stats, train=train, weight=weight, parts=True)
        return (*out, stats)

    def trainable(state: State, params, head_only: bool = False):
        """1 where a parameter learns: everything but the other tasks' weight rows (with
        `head_only`, the fine-tuning's: sigma and the current rows alone)."""
        rows = state.current.astype(jnp.float32)[:, None]
        mask = jax.tree.map(jnp.zeros_like if head_only else jnp.ones_like, params)
        mask["weight"] = jnp.broadcast_to(rows, params["weight"].shape)
        if head_only:
            mask["scale"] = jnp.ones_like(params["scale"])
        return mask

    def loss_fn(state: State, params, stats, x, y, weight):
        """The loss over the items of nonzero `weight`, and the new BatchNorm statistics."""
        feats, cos, scale, stats = parts(state.net, params, stats, x, True, weight)
        loss = masked_mean(cross_entropy(scale * cos, y), weight)
        old, _, _, _ = parts(state.net, state.teacher, state.teacher_stats, x, False)
        agree = cosine(feats, old)
        loss = loss + state.lamda * masked_mean(1.0 - agree, weight)
        is_old = state.past[y] * weight
        gt = jnp.take_along_axis(cos, y[:, None], 1)
        new_cols = ~state.past  # the current task's columns and the not-yet-seen ones
        top, _ = jax.lax.top_k(jnp.where(new_cols, cos, -jnp.inf), config.k_mr)
        hinge = jnp.maximum(0.0, config.mr_margin - gt + top) * is_old[:, None]
        mr = jnp.sum(hinge) / jnp.maximum(jnp.sum(is_old) * config.k_mr, 1)
        return loss + config.lamda_mr * mr, stats

    def masked_step(opt, state: State, params, opt_state, stats, x, y, weight, mask):
        """One step of `opt` on the parameters `mask` marks: `(loss, params, opt_state, stats)`;
        the others are not seen by the optimizer (torch's requires_grad=False)."""
        (loss, stats), grads = jax.value_and_grad(
            lambda p: loss_fn(state, p, stats, x, y, weight), has_aux=True
        )(params)
        grads = jax.tree.map(lambda g, m: g * m, grads, mask)
        updates, opt_state = opt.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u, m: u * m, updates, mask)
        return loss, optax.apply_updates(params, updates), opt_state, stats

    def init(key, example_x):
        net = create_net(net_model, tx, key, input_fn(example_x, key, False))
        none = jnp.zeros(num_classes, bool)
        return State(
            net=net,
            teacher=net.params,
            teacher_stats=net.batch_stats,
            memory=exemplars.init(config.buffer_size, example_x[0]),
            current=none,
            past=none,
            lamda=jnp.zeros((), jnp.float32),
        )

    def lamda_of(task: TaskInfo) -> float:
        if task.index == 0:
            return 0.0
        if config.lamda_schedule == "mammoth":
            return config.lamda_base * math.sqrt(task.index - 1)
        old = len(task.seen) - len(task.classes)
        return config.lamda_base * math.sqrt(old / len(task.classes))

    def begin_task(state: State, task: TaskInfo, key) -> State:
        past = tuple(c for c in task.seen if c not in task.classes)
        current = class_mask(task.classes, num_classes)
        params = state.net.params
        if task.index > 0:  # the new rows drawn afresh (imprinted next, when asked)
            d = params["weight"].shape[1]
            fresh = jax.random.uniform(key, params["weight"].shape, minval=-1, maxval=1)
            weight = jnp.where(current[:, None], fresh / math.sqrt(d), params["weight"])
            params = {**params, "weight": weight}
        net = state.net.replace(params=params, opt_state=state.net.tx.init(params))
        return state.replace(
            net=net,
            current=current,
            past=class_mask(past, num_classes),
            lamda=jnp.asarray(lamda_of(task), jnp.float32),
        )

    def begin_task_data(state: State, task: TaskInfo, data, key) -> State:
        """Imprints the new classes' rows from the task's items (after the first task)."""
        if task.index == 0 or not config.imprint_weights:
            return state
        x, y = data
        net = state.net

        def feats_of(xb, kb):
            f, _, _, _ = parts(net, net.params, net.batch_stats, input_fn(xb, kb, True), False)
            return exemplars.normalize(f)

        n = x.shape[0]
        chunk = min(500, n)
        keys = jax.random.split(key, -(-n // chunk))
        pad = -n % chunk
        xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
        f = jax.lax.map(lambda a: feats_of(*a), (xp.reshape(-1, chunk, *x.shape[1:]), keys))
        f = f.reshape(n + pad, -1)[:n]
        onehot = jax.nn.one_hot(y, num_classes) * state.current  # (N, C), new classes only
        mean = exemplars.normalize((onehot.T @ f) / jnp.maximum(onehot.sum(0), 1)[:, None])
        w = net.params["weight"]
        norms = jnp.linalg.norm(w, axis=-1)
        scale = jnp.sum(norms * state.past) / jnp.maximum(jnp.sum(state.past), 1)
        weight = jnp.where(state.current[:, None], mean * scale, w)
        params = {**net.params, "weight": weight}
        return state.replace(net=net.replace(params=params, opt_state=net.tx.init(params)))

    def train_step(state: State, batch, key):
        x = input_fn(batch["x"], key, True)
        net = state.net
        weight = jnp.ones(batch["y"].shape[0])
        loss, params, opt_state, stats = masked_step(
            net.tx,
            state,
            net.params,
            net.opt_state,
            net.batch_stats,
            x,
            batch["y"],
            weight,
            trainable(state, net.params),
        )
        net = net.replace(params=params, opt_state=opt_state, batch_stats=stats, step=net.step + 1)
        return state.replace(net=net), {"loss": loss}

    def fine_tune(state: State, key) -> State:
        """Class-balanced fine-tuning of sigma and the current rows on the memory alone:
        each epoch the memory shuffled (training transform) in batches of `fit_batch_size`,
        the last one short; BatchNorm on batch statistics, its running ones unchanged."""
        memory = state.memory
        bs = config.fit_batch_size
        net = state.net
        mask = trainable(state, net.params, head_only=True)

        def step(carry, inp):
            params, opt_state = carry
            xb, yb, n, k = inp
            weight = (jnp.arange(bs) < n).astype(jnp.float32)
            _, new_params, new_opt, _ = masked_step(
                ft_tx,
                state,
                params,
                opt_state,
                net.batch_stats,
                input_fn(xb, k, True),
                yb,
                weight,
                mask,
            )
            return jax.tree.map(
                lambda a, b: jnp.where(n > 0, a, b), (new_params, new_opt), (params, opt_state)
            ), None

        def epoch(carry, k):
            k_order, k_steps = jax.random.split(k)
            idx, counts = shuffled_batches(memory.valid, k_order, bs)
            keys = jax.random.split(k_steps, idx.shape[0])
            return jax.lax.scan(step, carry, (memory.x[idx], memory.y[idx], counts, keys))[0], None

        carry = (net.params, ft_tx.init(net.params))
        (params, _), _ = jax.lax.scan(epoch, carry, jax.random.split(key, config.fitting_epochs))
        return state.replace(net=net.replace(params=params))

    def end_task(state: State, task: TaskInfo, data, key) -> State:
        m = config.buffer_size // len(task.seen)
        if m < 1:
            raise ValueError(
                f"buffer_size {config.buffer_size} is smaller than the {len(task.seen)} classes "
                "seen; choose a larger buffer"
            )
        x, y = data
        net = state.net

        def raw_feats(xb):
            return parts(net, net.params, net.batch_stats, input_fn(xb, None, False), False)[0]

        feats = chunked(raw_feats, x, min(500, x.shape[0]))
        memory = exemplars.update(state.memory, x, y, feats, task.classes, m, normalize=False)
        state = state.replace(teacher=net.params, teacher_stats=net.batch_stats, memory=memory)
        if config.fitting_epochs:
            state = fine_tune(state, key)
        return state

    def train_pool(state: State, example_x=None):
        del example_x
        return state.memory.x, state.memory.y, state.memory.valid

    return Method(
        name="lucir",
        config=config,
        init=init,
        begin_task=begin_task,
        begin_task_data=begin_task_data,
        train_step=train_step,
        end_task=end_task,
        predict=lambda state, x: predict(state.net, input_fn(x, None, False)),
        train_pool=train_pool,
        needs=Needs(settings=CLASS_SPLIT_SETTINGS, pool_capacity=config.buffer_size),
    )
