"""GDumb (`gdumb`): Prabhu, Torr and Dokania, *GDumb: A Simple Approach that Questions Our
Progress in Continual Learning*, ECCV 2020.

No learning on the stream: a greedy sampler keeps a class-balanced memory, and whenever
the model is needed (after each task) a network trained from scratch on the memory alone
answers. Loss (fitting only): lam * CE(f(x~), y) + (1 - lam) * CE(f(x~), y[pi]), with x~ a
CutMix of the batch (probability `cutmix_prob`, lam ~ Beta(cutmix_alpha, cutmix_alpha)
recomputed from the box), plain CE otherwise.

The sampler (`sampler="balanced"`, the paper's Algorithm 1): an item is stored while the
memory has room; once full, an item of class y whose class holds fewer than
`buffer_size / classes seen` items replaces a random item of the largest class (the first
largest, by label, on a tie), and any other item is dropped. The authors' code builds the
same memory offline (the first `buffer_size // classes` items of each class, every class
known in advance); Mammoth's `models/gdumb.py` (e75a491) keeps a reservoir instead
(`sampler="reservoir"`).

The fit, as Mammoth's `fit_buffer` (gdumb.py:17-56), which the authors' schedule follows:
a freshly initialised network, SGD (`optim_mom`, `optim_wd`, `optim_nesterov`, torch's
semantics) for `fitting_epochs` epochs, at lr `maxlr / 10` in epoch 0, `maxlr` in epoch 1,
then cosine warm restarts (T_0 1, T_mult 2, floor `minlr`) stepped once an epoch. Each
epoch shuffles the memory, augments each item once and cuts it into consecutive batches of
`fit_batch_size` (the paper's 16; Mammoth fits at the run's batch size, its tuned rows
here set that), the last one short.
`fit_at="every"` fits after each task (the paper: the model is trained whenever it is
needed, so every row of the accuracy matrix is meaningful); `"last"` only after the last
task, as Mammoth, whose earlier rows score the untrained network.

Deviations: the authors' own code (drimpossible/GDumb) fits with SGD momentum 0.9, weight
decay 1e-6, gradient clipping at 10 and in fp16; the defaults here are Mammoth's optimizer
(no momentum, no decay, no clipping), with the paper's batch of 16 (set `optim_mom`,
`optim_wd` for the authors'; clipping and fp16 are not available). The draws (shuffles,
CutMix boxes) come from JAX keys.
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
    create_net,
    cross_entropy,
    forward,
    masked_mean,
    predict_with,
    shuffled_batches,
)

TEST_CONFIG = {"buffer_size": 16, "fitting_epochs": 3}


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    buffer_size: int = hparam(500, "memory capacity (items)", ge=1)
    sampler: str = hparam(
        "balanced",
        "how the memory is kept: the paper's greedy class-balanced sampler, or Mammoth's reservoir",
        choices=("balanced", "reservoir"),
    )
    fit_at: str = hparam(
        "every",
        "train from scratch on the memory after every task (the paper) or after the last "
        "one only (Mammoth)",
        choices=("every", "last"),
    )
    maxlr: float = hparam(0.05, "the fit's peak learning rate", gt=0)
    minlr: float = hparam(0.0005, "the floor of the cosine warm restarts", ge=0)
    fitting_epochs: int = hparam(256, "epochs of each fit on the memory", ge=1)
    fit_batch_size: int = hparam(
        16, "the fit's batch size (the paper's 16; Mammoth fits at the run's batch size)", ge=1
    )
    cutmix_alpha: float = hparam(1.0, "CutMix's Beta(alpha, alpha)", gt=0)
    cutmix_prob: float = hparam(0.5, "probability that a batch is CutMixed", ge=0, le=1)
    optim_mom: float = hparam(0.0, "SGD momentum of the fit (0: none)", ge=0, sweepable=False)
    optim_wd: float = hparam(0.0, "weight decay of the fit (added to the gradient)", ge=0)
    optim_nesterov: bool = hparam(False, "Nesterov momentum")


@struct.dataclass
class State:
    net: NetState
    buffer: buffer_lib.Buffer
    counts: jax.Array  # (num_classes,) items of each class in the memory
    seen: jax.Array  # (num_classes,) classes offered so far


def fit_lr(epoch, maxlr: float, minlr: float):
    """The learning rate of fitting epoch `epoch` (0-based): maxlr/10, maxlr, then torch's
    CosineAnnealingWarmRestarts(T_0=1, T_mult=2, eta_min=minlr) stepped from epoch 2 on."""
    e = jnp.maximum(jnp.asarray(epoch, jnp.float32), 2.0)
    period = 2.0 ** jnp.floor(jnp.log2(e) + 1e-6)
    cosine = minlr + (maxlr - minlr) * (1 + jnp.cos(jnp.pi * (e - period) / period)) / 2
    return jnp.where(epoch == 0, maxlr / 10, jnp.where(epoch == 1, maxlr, cosine))


def balanced_add(state: State, x, y, key):
    """The greedy class-balanced sampler, item by item along the batch."""
    cap = state.buffer.capacity

    def one(carry, item):
        data, counts, seen = carry
        xi, yi, k = item
        seen = seen.at[yi].set(True)
        filled = jnp.sum(counts)
        full = filled >= cap
        largest = jnp.argmax(counts)
        in_largest = (data["y"] == largest) & (jnp.arange(cap) < filled)
        victim = jnp.argmax(jnp.where(in_largest, jax.random.uniform(k, (cap,)), -1.0))
        replace = full & (counts[yi] < cap / jnp.sum(seen))
        store = ~full | replace
        slot = jnp.where(full, victim, filled)
        data = {
            "x": data["x"].at[slot].set(jnp.where(store, xi, data["x"][slot])),
            "y": data["y"].at[slot].set(jnp.where(store, yi, data["y"][slot])),
        }
        counts = counts.at[largest].add(-replace.astype(jnp.int32))
        counts = counts.at[yi].add(store.astype(jnp.int32))
        return (data, counts, seen), None

    keys = jax.random.split(key, y.shape[0])
    init = (state.buffer.data, state.counts, state.seen)
    (data, counts, seen), _ = jax.lax.scan(one, init, (x, y.astype(jnp.int32), keys))
    buffer = buffer_lib.Buffer(data=data, num_seen=state.buffer.num_seen + y.shape[0])
    return state.replace(buffer=buffer, counts=counts, seen=seen)


def cutmix(x, y, n, key, alpha: float, prob: float):
    """`(x~, y[pi], lam)`: CutMix of the first `n` items of `x` (prepared, `(B, H, W, ...)`)
    as Mammoth's `utils/augmentations.cutmix_data`: a box of area about (1 - lam0) of the
    image, lam0 ~ Beta(alpha, alpha), pasted from the items in a random order, lam the part
    of the image kept; with probability 1 - `prob` the batch as it is (lam 1)."""
    k_apply, k_lam, k_perm, k_cx, k_cy = jax.random.split(key, 5)
    b, h, w = x.shape[:3]
    pos = jnp.arange(b)
    order = jnp.argsort(jnp.where(pos < n, jax.random.uniform(k_perm, (b,)), 2.0 + pos))
    lam0 = jax.random.beta(k_lam, alpha, alpha)
    cut = jnp.sqrt(1.0 - lam0)
    cut_h, cut_w = jnp.floor(h * cut).astype(jnp.int32), jnp.floor(w * cut).astype(jnp.int32)
    cx, cy = jax.random.randint(k_cx, (), 0, h), jax.random.randint(k_cy, (), 0, w)
    x1, x2 = jnp.clip(cx - cut_h // 2, 0, h), jnp.clip(cx + cut_h // 2, 0, h)
    y1, y2 = jnp.clip(cy - cut_w // 2, 0, w), jnp.clip(cy + cut_w // 2, 0, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = (rows >= x1) & (rows < x2) & (cols >= y1) & (cols < y2)
    box = box.reshape(1, h, w, *([1] * (x.ndim - 3)))
    apply = jax.random.uniform(k_apply) <= prob
    mixed = jnp.where(box & apply, x[order], x)
    lam = jnp.where(apply, 1.0 - (x2 - x1) * (y2 - y1) / (h * w), 1.0)
    return mixed, y[order], lam


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """GDumb: a memory of `buffer_size` items kept by `sampler`, and a network fitted from
    scratch on it (`fitting_epochs`, `maxlr`/`minlr`, CutMix) at `fit_at`."""
    config = configure(Config, config, overrides)
    num_classes = model.num_classes

    def optimizer(learning_rate):
        sgd = optax.sgd(
            learning_rate,
            momentum=config.optim_mom or None,
            nesterov=config.optim_nesterov,
        )
        return optax.chain(optax.add_decayed_weights(config.optim_wd), sgd)

    tx = optax.inject_hyperparams(optimizer)(learning_rate=config.maxlr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        example = {"x": example_x[0], "y": jnp.zeros((), jnp.int32)}
        return State(
            net=net,
            buffer=buffer_lib.init(config.buffer_size, example),
            counts=jnp.zeros(num_classes, jnp.int32),
            seen=jnp.zeros(num_classes, bool),
        )

    def train_step(state: State, batch, key):
        if config.sampler == "balanced":
            state = balanced_add(state, batch["x"], batch["y"], key)
        else:
            buffer = buffer_lib.add(state.buffer, {"x": batch["x"], "y": batch["y"]}, key)
            state = state.replace(buffer=buffer)  # (a reservoir keeps no class counts)
        return state, {"loss": jnp.zeros((), jnp.float32)}

    def filled(state: State):
        if config.sampler == "balanced":
            return jnp.sum(state.counts)
        return state.buffer.size

    def fit(state: State, batch_size: int, key) -> State:
        """A fresh network trained on the memory alone."""
        cap = state.buffer.capacity
        k_init, k_epochs = jax.random.split(key)
        net = create_net(model, tx, k_init, input_fn(state.buffer.data["x"][:1], k_init, False))
        valid = jnp.arange(cap) < filled(state)

        def step(net, inp):
            xb, yb, n, k = inp
            k_aug, k_mix = jax.random.split(k)
            weight = (jnp.arange(batch_size) < n).astype(jnp.float32)
            x, y_perm, lam = cutmix(
                input_fn(xb, k_aug, True), yb, n, k_mix, config.cutmix_alpha, config.cutmix_prob
            )

            def loss_fn(params):
                logits, stats = forward(net, params, x, net.batch_stats, weight=weight)
                ce = lam * cross_entropy(logits, yb) + (1 - lam) * cross_entropy(logits, y_perm)
                return masked_mean(ce, weight), stats

            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
            new = net.apply_gradients(grads=grads, batch_stats=stats)
            return jax.tree.map(lambda a, b: jnp.where(n > 0, a, b), new, net), loss

        def epoch(net, inp):
            e, k = inp
            k_order, k_steps = jax.random.split(k)
            hyper = {
                **net.opt_state.hyperparams,
                "learning_rate": fit_lr(e, config.maxlr, config.minlr),
            }
            net = net.replace(opt_state=net.opt_state._replace(hyperparams=hyper))
            idx, counts = shuffled_batches(valid, k_order, batch_size)
            items = buffer_lib.gather(state.buffer, idx)
            keys = jax.random.split(k_steps, idx.shape[0])
            return jax.lax.scan(step, net, (items["x"], items["y"], counts, keys))[0], None

        epochs = jnp.arange(config.fitting_epochs)
        net, _ = jax.lax.scan(epoch, net, (epochs, jax.random.split(k_epochs, len(epochs))))
        return state.replace(net=net)

    def end_task(state: State, task: TaskInfo, data, key):
        del data
        if config.fit_at == "last":
            if task.num_tasks < 1:
                raise ValueError(
                    "gdumb with fit_at=last needs the number of tasks (TaskInfo.num_tasks)"
                )
            if task.index != task.num_tasks - 1:
                return state
        batch_size = config.fit_batch_size or task.batch_size
        if batch_size < 1:
            raise ValueError(
                "gdumb needs the fit's batch size: set fit_batch_size or give TaskInfo.batch_size"
            )
        return fit(state, batch_size, key)

    return Method(
        name="gdumb",
        needs=Needs(settings=CLASS_SPLIT_SETTINGS),  # no domain-IL, as Mammoth
        config=config,
        init=init,
        train_step=train_step,
        end_task=end_task,
        predict=predict_with(input_fn),
    )
