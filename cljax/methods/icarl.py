"""iCaRL (`icarl`): Rebuffi et al., CVPR 2017, as the DER paper ran it (Mammoth's
`models/icarl.py` of the paper's release, commit 7ab9db9, with its 5dc82be fix).

- **Training data**: each task's items plus the exemplars kept so far (the
  driver shuffles the memory in with the task's data: `train_pool`), in batches.
- **Loss**: sigmoid binary cross-entropy over the classes seen so far, averaged
  over items and those classes; the targets of the current task's classes are
  the one-hot labels, those of the earlier classes the sigmoid of the network of
  the previous task's end (frozen, in the state) on the same inputs; plus
  `wd_reg * |theta|^2`. The previous network runs as Mammoth's
  `deepcopy(self.net.eval())` (5dc82be `models/icarl.py:130`, read at `:67`): in
  inference mode with the BatchNorm statistics of the task's end, kept in the
  state with its parameters (not the student's, which move during the task).
- **Memory** (`cljax/core/exemplars.py`): after each task, `m = buffer_size // seen
  classes` exemplars per class: the old classes keep their first `m` (herding
  order), each new class gets `m` chosen by herding on the features (the input
  of the output layer) of its un-augmented items.
- **Prediction**: nearest mean of exemplars: `-|phi(x) - mu_c|^2` for each class
  with exemplars, `mu_c` the mean feature of class c's exemplars under the
  network of the task's end (computed once, in `end_task`; nothing changes the
  network between then and the evaluation). Before the first task ends (no
  exemplars yet) it returns the network's logits.

`normalize` (default, the paper's Algorithm 1 and 4): features are L2-normalised
before herding, the class means are means of normalised features, re-normalised,
and test features are normalised. Mammoth does none of this: `normalize=False`.

Where this deviates from Mammoth, and why:
- `normalize` (above) follows the paper by default.
- Mammoth's code of the DER paper, on MNIST, casts each exemplar (floats in
  [0, 1]) to uint8 before appending it to the training data: every pixel below
  255 becomes 0, the rest 1 (1/255 once re-read), so its S-MNIST iCaRL trains on
  near-blank images with the old classes' labels (Mammoth fixed this in 2022,
  0d727a7's `icarl_replay`, multiplying by 255 first). The herding and the class
  means use the true exemplars. We replay the true exemplars; `replay_images=
  "uint8-truncated"` replays them as the DER paper's code did, to measure what
  the bug did to the paper's row (experiments/reproduce_der.py's `icarl-mammoth`).

As van de Ven et al.'s code runs it (GMvandeVen/continual-learning e6d795a, compare.py's
iCaRL: `bce`, `bce_distill`, `prototypes`, `add_buffer`, herding, its class-IL "all-so-far"
active classes; its `split-mnist` row): `per_class=100` (a fixed budget a class, not the
buffer shared out: `buffer_size` 1000 holds ten classes' 100), `temperature=2` (the earlier
classes' targets `sigmoid(old / 2)`, its `KD_temp`), `reduction="sum"` (the BCE summed over
the seen classes, averaged over items), Adam, `normalize` (its `norm_exemplars`). Where this
deviates from that code: nothing known.
"""

from __future__ import annotations

import dataclasses

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
    forward,
    optimizer,
    optimizer_hparam,
    penultimate,
    predict,
)
from cljax.models.dyn_expand import chunked

NEG = -1e9  # logit of a class without exemplars (finite: masks elsewhere stay well defined)


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    """Settings of `icarl`."""

    lr: float = hparam(0.1, "SGD step size", gt=0)
    buffer_size: int = hparam(500, "exemplar memory capacity (items, split evenly by class)", ge=1)
    wd_reg: float = hparam(0.0, "L2 penalty on every parameter, in the loss", ge=0)
    normalize: bool = hparam(
        True, "L2-normalise features for herding and the class means (the paper; Mammoth: no)"
    )
    optimizer: str = optimizer_hparam()
    temperature: float = hparam(
        1.0, "the earlier classes' targets are sigmoid(old logits / temperature)", gt=0
    )
    reduction: str = hparam(
        "mean",
        "the BCE's mean over items and seen classes (Mammoth) or its sum over the seen classes, "
        "mean over items (van de Ven et al.'s)",
        choices=("mean", "sum"),
    )
    per_class: int = hparam(
        0, "exemplars kept a class (0: buffer_size // classes seen, Mammoth's)", ge=0
    )
    replay_images: str = hparam(
        "exact",
        "how exemplars are replayed: exact, or uint8-truncated as the DER paper's code did on MNIST",
        choices=("exact", "uint8-truncated"),
    )


@struct.dataclass
class IcarlState:
    """The network, the previous task's network, the exemplars and the class means."""

    net: NetState
    teacher: dict  # params of the network at the previous task's end
    teacher_stats: dict  # its BatchNorm statistics then, frozen with them ({} for MLPs)
    memory: exemplars.Memory
    means: jax.Array  # (C, D) mean exemplar feature per class
    has_mean: jax.Array  # (C,) classes with exemplars
    current: jax.Array  # (C,) classes of the current task
    past: jax.Array  # (C,) classes of the earlier tasks


def feature_fn(model, input_fn, normalize: bool):
    """`features(net, raw x) -> (N, D)`: the input of the output layer, inference mode."""
    body = penultimate(model)

    def features(net: NetState, x_raw):
        out = body(net.params, net.batch_stats, input_fn(x_raw, None, False))
        return exemplars.normalize(out) if normalize else out

    return features


def class_means(features, net: NetState, memory: exemplars.Memory, num_classes: int, normalize):
    """`(means (C, D), has_mean (C,))` of the exemplars' features per class."""
    feats = chunked(lambda xb: features(net, xb), memory.x, min(500, memory.x.shape[0]))
    onehot = jax.nn.one_hot(memory.y, num_classes) * memory.valid[:, None]  # (K, C)
    counts = onehot.sum(0)
    means = (onehot.T @ feats) / jnp.maximum(counts, 1.0)[:, None]
    if normalize:
        means = exemplars.normalize(means)
    return means, counts > 0


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """iCaRL with SGD (or Adam) at `lr`, `buffer_size` exemplars and L2 weight `wd_reg`."""
    config = configure(Config, config, overrides)
    tx = optimizer(config.optimizer, config.lr)
    num_classes = model.num_classes
    features = feature_fn(model, input_fn, config.normalize)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        dim = features(net, example_x[:1]).shape[-1]
        none = jnp.zeros(num_classes, bool)
        return IcarlState(
            net=net,
            teacher=net.params,
            teacher_stats=net.batch_stats,
            memory=exemplars.init(config.buffer_size, example_x[0]),
            means=jnp.zeros((num_classes, dim), jnp.float32),
            has_mean=none,
            current=none,
            past=none,
        )

    def begin_task(state: IcarlState, task: TaskInfo, key) -> IcarlState:
        del key
        past = tuple(c for c in task.seen if c not in task.classes)
        return state.replace(
            current=class_mask(task.classes, num_classes), past=class_mask(past, num_classes)
        )

    def train_step(state: IcarlState, batch, key):
        x = input_fn(batch["x"], key, True)
        net = state.net
        old, _ = forward(net, state.teacher, x, state.teacher_stats, train=False)
        onehot = jax.nn.one_hot(batch["y"], num_classes)
        targets = jnp.where(state.past, jax.nn.sigmoid(old / config.temperature), onehot)
        seen = state.past | state.current

        def loss_fn(params):
            logits, stats = forward(net, params, x, net.batch_stats)
            bce = optax.sigmoid_binary_cross_entropy(logits, targets)
            per = 1.0 if config.reduction == "sum" else jnp.sum(seen)
            loss = jnp.sum(bce * seen) / (bce.shape[0] * per)
            l2 = sum(jnp.sum(p**2) for p in jax.tree.leaves(params))
            return loss + config.wd_reg * l2, (stats, loss)

        (loss, (stats, bce)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
        net = net.apply_gradients(grads=grads, batch_stats=stats)
        return state.replace(net=net), {"loss": loss, "bce": bce}

    def end_task(state: IcarlState, task: TaskInfo, task_data, key) -> IcarlState:
        """The teacher for the next task (parameters and BatchNorm statistics), the memory by
        herding, the class means."""
        del key
        m = config.per_class or config.buffer_size // len(task.seen)
        if m < 1 or m * len(task.seen) > config.buffer_size:
            raise ValueError(
                f"buffer_size {config.buffer_size} cannot hold {max(m, 1)} exemplars of each of "
                f"the {len(task.seen)} classes seen; choose a larger buffer"
            )
        x, y = task_data
        feats = chunked(lambda xb: features(state.net, xb), x, 500)
        memory = exemplars.update(
            state.memory, x, y, feats, task.classes, m, normalize=config.normalize
        )
        means, has_mean = class_means(features, state.net, memory, num_classes, config.normalize)
        return state.replace(
            teacher=state.net.params,
            teacher_stats=state.net.batch_stats,
            memory=memory,
            means=means,
            has_mean=has_mean,
        )

    def predict_nmc(state: IcarlState, x_raw):
        """Nearest mean of exemplars (the network's logits before any exemplars exist)."""
        feats = features(state.net, x_raw)
        dist = jnp.sum((feats[:, None, :] - state.means[None]) ** 2, -1)
        nmc = jnp.where(state.has_mean, -dist, NEG)
        return jnp.where(
            state.has_mean.any(), nmc, predict(state.net, input_fn(x_raw, None, False))
        )

    def train_pool(state: IcarlState, example_x=None):
        del example_x  # the pool holds raw inputs of the scenario's shape already
        memory = state.memory
        x = memory.x
        if config.replay_images == "uint8-truncated":
            if x.dtype != jnp.uint8:
                raise ValueError("replay_images='uint8-truncated' needs uint8 images (MNIST)")
            x = (x == 255).astype(jnp.uint8)  # float(x / 255) cast to uint8: 1 only at 255
        return x, memory.y, memory.valid

    return Method(
        name="icarl",
        config=config,
        init=init,
        train_step=train_step,
        predict=predict_nmc,
        begin_task=begin_task,
        end_task=end_task,
        train_pool=train_pool,
        needs=Needs(settings=CLASS_SPLIT_SETTINGS, pool_capacity=config.buffer_size),
    )
