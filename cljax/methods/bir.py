"""Brain-Inspired Replay (`bir`): van de Ven, Siegelmann and Tolias, "Brain-inspired replay
for continual learning with artificial neural networks", Nature Communications 11:4069
(2020), as the authors' maintained code runs it (GMvandeVen/continual-learning at e6d795a,
`--brain-inspired`: `models/cond_vae.py`, `train/train_task_based.py`, `params/`).

One network classifies and generates ("replay through feedback"): an MLP encoder whose top
feeds both a linear classifier and the latent code of a VAE, and a decoder back to the input.
While it learns task t the network trained to the end of task t-1 (frozen) generates the
replay: a class drawn uniformly from the classes it has seen, a latent code from that class's
mode of the prior, decoded through that class's gates. Each step minimises

    r * [recon + KL/D + CE](current batch) + (1 - r) * [recon + KL/D + KD](replayed batch),

r = 1/t, D the input's size; recon the binary cross-entropy (mean over pixels; MSE on hidden
features), KL the one-sample estimate against the class's mode (the current items' labels;
the replayed items' softened previous-model scores weight the modes), KD the distillation of
the previous model's scores on the replayed items at `temperature`. Adam, one optimizer for
the whole network, never reset.

Components (each switchable as the reference's options; all on is `--brain-inspired`):
- `prior`: "gmm", a learned Gaussian mode per class (conditional replay: `--prior=GMM
  --per-class`), or "standard" N(0, I) (the class for the gates then drawn uniformly);
- `gate_prop`: the fraction of each hidden decoder layer's units masked to 0 by a fixed random
  mask per class (`--dg-gates --dg-prop`; 0: no gates); current items are gated by their label,
  replayed ones by the previous model's softened scores (soft) or argmax (hard). `gates=task`
  masks per task instead (the reference's "context" gates, its domain-IL default): current items
  through their task's mask; a replayed item's task drawn uniformly from the earlier ones, its
  class uniformly from that task's, both the previous and the current network gated by it;
- `distill`: soft targets (the previous model's scores at `temperature`, `--distill`) or its
  argmax as a hard label (`--replay=generative --feedback` without `--distill`);
- `replay_layer`: internal replay (`--hidden`). 0 replays inputs (the reference on MNIST,
  whose network has no convolutional layers to replay from); L > 0 puts L ReLU layers of
  `fc_units` under the VAE, trained during the first task and frozen after it, and the VAE
  then encodes, generates and replays their output (reconstruction as MSE, no sigmoid: the
  reference's setting for features, CIFAR-100's);
- `replay`: false turns replay off (the network trains on the current task only).

Deviations (from a line-by-line reading of the reference):
- The reference's pre-trained, frozen convolutional layers for internal replay (trained on
  CIFAR-10 for CIFAR-100) are here the first task's own training of the lower MLP layers;
  the reconstruction target is their output with its gradient stopped (the reference's
  frozen layers give no gradient).
- The gate masks and every random draw come from JAX's keys, not numpy's / torch's streams.
- `F.binary_cross_entropy`'s gradient at a clamped log (a saturated sigmoid) is 0 here.
- Class-IL as the reference's default `--active-classes all`: cross-entropy over every output
  and the previous model's scores over every output. `task_heads=k` is its task-IL training
  (`--scenario task`): each item's softmax (and distillation) over its own task's k classes; a
  replayed item's task drawn uniformly from the earlier ones and its class from that task's
  (the reference generates an equal share of the batch for each earlier task and averages
  their losses; here the tasks' shares are drawn, and the batch's mean taken).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from cljax.core.config import Hyperparams, hparam
from cljax.methods import HostHooks, Method, configure
from cljax.methods.common import (
    TASK_HEADS_DOC,
    class_mask,
    cross_entropy,
    flat_input,
    on_heads,
    task_heads_of,
)
from cljax.models import vae
from cljax.models.backbones import TorchDense

TEST_CONFIG = {"fc_units": 16, "z_dim": 4}


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    lr: float = hparam(1e-3, "Adam's learning rate (betas 0.9, 0.999)", gt=0)
    fc_units: int = hparam(400, "units of every hidden layer (encoder and decoder)", ge=1)
    fc_layers: int = hparam(3, "the reference's fc_lay: encoder layers + the latent layer", ge=2)
    z_dim: int = hparam(100, "latent units", ge=1)
    prior: str = hparam(
        "gmm",
        "gmm: a learned Gaussian mode per class; standard: N(0, I)",
        choices=("gmm", "standard"),
    )
    gate_prop: float = hparam(
        0.1, "fraction of hidden decoder units masked per class or task (0: no gates)", ge=0, le=1
    )
    gates: str = hparam(
        "class",
        "a decoder mask per class, or per task (the reference's context gates, domain-IL's)",
        choices=("class", "task"),
    )
    max_tasks: int = hparam(20, "with gates=task, the masks drawn (tasks a run may have)", ge=1)
    task_heads: int = hparam(0, TASK_HEADS_DOC, ge=0)
    distill: bool = hparam(True, "replayed items' targets: the previous model's soft scores")
    temperature: float = hparam(2.0, "distillation temperature", gt=0)
    replay: bool = hparam(True, "replay generated items from the previous model")
    replay_layer: int = hparam(
        0, "internal replay: frozen MLP layers under the VAE whose output is replayed", ge=0
    )


class BirNet(nn.Module):
    """`replay_layer` ReLU layers (frozen after the first task), then a `CondVAE` with a
    classifier on what they output."""

    in_features: int
    num_classes: int
    config: Config

    def setup(self):
        c = self.config
        self.lower = [TorchDense(c.fc_units) for _ in range(c.replay_layer)]
        self.vae = vae.CondVAE(
            in_features=c.fc_units if c.replay_layer else self.in_features,
            num_classes=self.num_classes,
            fc_units=c.fc_units,
            fc_layers=c.fc_layers,
            z_dim=c.z_dim,
            modes=self.num_classes if c.prior == "gmm" else 0,
            output="none" if c.replay_layer else "sigmoid",
        )

    def lift(self, x):
        """The input as the VAE sees it: through the lower layers (none by default)."""
        for layer in self.lower:
            x = nn.relu(layer(x))
        return x

    def __call__(self, x, eps, gates=None):
        return self.vae(self.lift(x), eps, gates)

    def autoencode(self, h, eps, gates=None):
        """The VAE (and classifier) on what the lower layers output, `h`."""
        return self.vae(h, eps, gates)

    def classify(self, h):
        return self.vae.classify(h)

    def decode(self, z, gates=None):
        return self.vae.decode(z, gates)

    def prior(self):
        return self.vae.prior()


@struct.dataclass
class State:
    net: train_state.TrainState
    prev: Any  # the network's parameters at the end of the last task (the replay's source)
    masks: tuple  # the decoder's fixed gate masks, `(classes or max_tasks, fc_units)`; () without
    seen: jax.Array  # (C,) classes of the tasks before this one (what `prev` can replay)
    task_classes: jax.Array  # (max_tasks, C) each finished task's classes ((1, C) for class gates)
    task: jax.Array  # index of the current task
    in_shape: tuple = struct.field(pytree_node=False, default=())  # one input's shape


@dataclasses.dataclass(frozen=True)
class Parts:
    config: Config
    input_fn: Any
    num_classes: int
    tx: Any  # Adam (made once: states made by two `init` calls share it)

    @functools.cache  # noqa: B019  (a few small frozen Parts, alive as long as their method)
    def net(self, in_features: int) -> BirNet:
        """The network for flat inputs of `in_features` (known from the data, not the model);
        one instance per size, so states made by two calls have equal tree structures."""
        return BirNet(in_features, self.num_classes, self.config)

    def apply(self, params, **kw):
        """`net.apply` bound to `params` (the input size read off the decoder's last layer)."""
        d = vae.input_size(params["vae"])
        return functools.partial(self.net(d).apply, {"params": params}, **kw)


def init(config: Config, parts: Parts, key, example_x) -> State:
    """The network for inputs like `example_x`, its fixed gate masks, nothing seen yet."""
    k_net, k_mask = jax.random.split(key)
    image = parts.input_fn(example_x, None, False)
    x = image.reshape((image.shape[0], -1))
    net = parts.net(x.shape[-1])
    params = net.init(k_net, x, jnp.zeros((x.shape[0], config.z_dim)))["params"]
    masks = ()
    if config.gate_prop > 0:
        masks = vae.gate_masks(
            k_mask, _gate_rows(config, parts), config.fc_units, config.fc_layers, config.gate_prop
        )
    # one unused row for class gates (a checkpoint cannot hold an empty array)
    by_task = config.max_tasks if config.gates == "task" else 1
    return State(
        net=train_state.TrainState.create(apply_fn=net.apply, params=params, tx=parts.tx),
        prev=params,
        masks=masks,
        seen=jnp.zeros(parts.num_classes, bool),
        task_classes=jnp.zeros((by_task, parts.num_classes), bool),
        task=jnp.int32(0),
        in_shape=tuple(image.shape[1:]),
    )


def _gate_rows(config: Config, parts: Parts) -> int:
    return config.max_tasks if config.gates == "task" else parts.num_classes


def begin_task(config: Config, state: State, task, key) -> State:
    """Records the task's index (r = 1 / (index + 1); replay from the second task on)."""
    del key
    if config.gates == "task" and task.index >= config.max_tasks:
        raise ValueError(
            f"bir: task {task.index + 1} has no decoder gate: gates=task draws max_tasks="
            f"{config.max_tasks} masks; set max_tasks to at least the run's number of tasks"
        )
    return state.replace(task=jnp.int32(task.index))


def end_task(config: Config, state: State, task, data, key) -> State:
    """The network as it ends the task becomes the replay's source; its classes join `seen`
    (and, with task gates, its row of `task_classes`)."""
    del data, key
    classes = class_mask(task.classes, state.seen.shape[0])
    state = state.replace(prev=state.net.params, seen=state.seen | classes)
    if config.gates == "task":
        state = state.replace(task_classes=state.task_classes.at[task.index].set(classes))
    return state


def _gates(state: State, gate_input):
    return vae.gates_of(state.masks, gate_input) if state.masks else None


def generate(config: Config, parts: Parts, state: State, params, key, n: int):
    """`n` items the network with `params` generates (inputs, or the replayed layer's
    features): with class gates a class drawn uniformly from `state.seen` for each (every class
    if none is seen), through that class's prior mode and gates; with task gates a task drawn
    uniformly from the finished ones, then a class uniformly from that task's. Returns
    `(items, classes, gate_input)`, the last the rows of the masks each item went through."""
    if config.gates == "task" or config.task_heads:
        k_t, k_y, k_z = jax.random.split(key, 3)
        k = config.task_heads
        rows = config.max_tasks if config.gates == "task" else parts.num_classes // k
        earlier = jnp.arange(rows) < jnp.maximum(state.task, 1)
        t = jax.random.categorical(k_t, jnp.where(earlier, 0.0, -jnp.inf), shape=(n,))
        if k:  # task t's classes: its head
            of_task = task_heads_of(t * k, parts.num_classes, k)
        else:
            of_task = state.task_classes[t]  # (n, C)
        allowed = of_task | ~of_task.any(axis=1, keepdims=True)
        y = jax.random.categorical(k_y, jnp.where(allowed, 0.0, -jnp.inf))
        if config.gates == "task":
            gate_input = jax.nn.one_hot(t, config.max_tasks)
        else:
            gate_input = jax.nn.one_hot(y, parts.num_classes)
    else:
        k_y, k_z = jax.random.split(key)
        logits = jnp.where(state.seen | ~state.seen.any(), 0.0, -jnp.inf)
        y = jax.random.categorical(k_y, logits, shape=(n,))
        gate_input = jax.nn.one_hot(y, parts.num_classes)
    eps = jax.random.normal(k_z, (n, config.z_dim))
    return decode_classes(config, parts, state, params, y, eps, gate_input), y, gate_input


def decode_classes(config: Config, parts: Parts, state: State, params, y, eps, gate_input=None):
    """Items of classes `y` from latent noise `eps`: through each class's prior mode (`gmm`)
    and the gates of `gate_input` (default: each item's class)."""
    apply = parts.apply(params)
    if config.prior == "gmm":
        means, logvars = apply(method=BirNet.prior)
        z = means[y] + jnp.exp(0.5 * logvars[y]) * eps
    else:
        z = eps
    if gate_input is None:
        gate_input = jax.nn.one_hot(y, parts.num_classes)
    return apply(z, _gates(state, gate_input), method=BirNet.decode)


def train_step(config: Config, parts: Parts, state: State, batch, key):
    """One Adam step on r * the current batch's loss + (1 - r) * the replayed batch's (the
    previous network's samples and its scores on them); see the module's docstring."""
    k_aug, k_eps, k_gen, k_eps_r = jax.random.split(key, 4)
    x = flat_input(parts.input_fn, batch["x"], k_aug, True)
    y = batch["y"]
    n = x.shape[0]
    recon_fn = vae.recon_mse if config.replay_layer else vae.recon_bce
    # the replayed batch: generated by the previous network, labelled by its classifier
    prev_apply = parts.apply(state.prev)
    x_r, y_r, gate_from = generate(config, parts, state, state.prev, k_gen, n)
    x_r = jax.lax.stop_gradient(x_r)
    scores = jax.lax.stop_gradient(prev_apply(x_r, method=BirNet.classify))
    heads = heads_r = None  # task-IL training: each item on its task's head
    if config.task_heads:
        heads = task_heads_of(y, parts.num_classes, config.task_heads)
        heads_r = task_heads_of(y_r, parts.num_classes, config.task_heads)
        scores = on_heads(scores, heads_r)
    soft = jax.nn.softmax(scores / config.temperature)
    hard = jnp.argmax(scores, axis=-1)
    replaying = (state.task > 0) & config.replay
    r = 1.0 / (state.task.astype(jnp.float32) + 1.0)

    def loss_fn(params):
        apply = parts.apply(params)
        h = apply(x, method=BirNet.lift)
        eps = jax.random.normal(k_eps, (n, config.z_dim))
        if config.gates == "task":
            gates = _gates(
                state,
                jnp.broadcast_to(
                    jax.nn.one_hot(state.task, config.max_tasks), (n, config.max_tasks)
                ),
            )
        else:
            gates = _gates(state, jax.nn.one_hot(y, parts.num_classes))
        recon, logits, mu, logvar, z = apply(h, eps, gates, method=BirNet.autoencode)
        prior = apply(method=BirNet.prior) if config.prior == "gmm" else None
        d = h.shape[-1]
        rec = recon_fn(jax.lax.stop_gradient(h), recon)
        var = vae.variational_loss(z, mu, logvar, prior, y=y) / d
        ce = cross_entropy(on_heads(logits, heads), y)
        current = jnp.mean(rec + var + ce)
        # replayed items
        eps_r = jax.random.normal(k_eps_r, (n, config.z_dim))
        if config.gates == "task":  # the task it was generated through
            gate_r = gate_from
        else:
            gate_r = soft if config.distill else jax.nn.one_hot(hard, parts.num_classes)
        recon_r, logits_r, mu_r, logvar_r, z_r = apply(
            x_r, eps_r, _gates(state, gate_r), method=BirNet.autoencode
        )
        logits_r = on_heads(logits_r, heads_r)
        if config.distill:
            var_r = vae.variational_loss(z_r, mu_r, logvar_r, prior, probs=soft)
            target = vae.kd_loss(logits_r, scores, config.temperature)
        else:
            var_r = vae.variational_loss(z_r, mu_r, logvar_r, prior, y=hard)
            target = cross_entropy(logits_r, hard)
        replayed = jnp.mean(recon_fn(x_r, recon_r) + var_r / d + target)
        total = jnp.where(replaying, r * current + (1.0 - r) * replayed, current)
        return total, (jnp.mean(rec), jnp.mean(ce), replayed)

    (loss, (rec, ce, rep)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.net.params)
    net = state.net.apply_gradients(grads=grads)
    if config.replay_layer:  # the lower layers learn during the first task only
        frozen = state.task > 0
        params = dict(net.params)
        for name in (k for k in params if k.startswith("lower")):
            params[name] = jax.tree.map(
                lambda new, old: jnp.where(frozen, old, new), params[name], state.net.params[name]
            )
        net = net.replace(params=params)
    metrics = {"loss": loss, "recon": rec, "ce": ce, "replay_loss": jnp.where(replaying, rep, 0.0)}
    return state.replace(net=net), metrics


def predict(parts: Parts, state: State, x):
    """The classifier's logits (the encoder's top, through any frozen lower layers)."""
    apply = parts.apply(state.net.params)
    return apply(
        apply(flat_input(parts.input_fn, x, None, False), method=BirNet.lift),
        method=BirNet.classify,
    )


def sample(config: Config, parts: Parts, state: State, key, per_class=8):
    """`per_class` samples of every class the current network can generate (only images:
    with `replay_layer` > 0 it generates features), with their classes."""
    y = jnp.repeat(jnp.arange(parts.num_classes), per_class)
    eps = jax.random.normal(key, (y.shape[0], config.z_dim))
    gate_input = None
    if config.gates == "task":  # each class through the latest task that had it (or this one)
        had = state.task_classes  # (max_tasks, C)
        last = config.max_tasks - 1 - jnp.argmax(had[::-1], axis=0)
        task_of = jnp.where(had.any(axis=0), last, state.task)
        gate_input = jax.nn.one_hot(task_of[y], config.max_tasks)
    images = decode_classes(config, parts, state, state.net.params, y, eps, gate_input)
    return images.reshape((y.shape[0], *state.in_shape)), y


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """BI-R for the benchmark `model`'s number of classes (the backbone itself is not used:
    the method's network is its own, `BirNet`)."""
    config = configure(Config, config, overrides)
    tx = optax.adam(config.lr, b1=0.9, b2=0.999, eps=1e-8)
    parts = Parts(config=config, input_fn=input_fn, num_classes=model.num_classes, tx=tx)
    bind = functools.partial
    host = HostHooks(sample=bind(sample, config, parts)) if not config.replay_layer else HostHooks()
    return Method(
        name="bir",
        config=config,
        init=bind(init, config, parts),
        begin_task=bind(begin_task, config),
        train_step=bind(train_step, config, parts),
        end_task=bind(end_task, config),
        predict=bind(predict, parts),
        host=host,
    )
