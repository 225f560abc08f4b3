"""Deep Generative Replay with a VAE generator (`dgr_vae`): Shin et al.'s DGR (NIPS 2017) as van
de Ven et al.'s code runs it (GMvandeVen/continual-learning e6d795a, `--replay=generative`:
`models/vae.py`, `train/train_task_based.py`), the generative-replay baseline of "Three types of
incremental learning" and of the BI-R paper. `dgr` is the same idea with the GAN generators of
the DGR paper.

A scholar of two networks: the benchmark's classifier (the solver, Adam at `lr`) and a separate
VAE (`cljax.models.vae.CondVAE` without classifier: `fc_layers - 1` ReLU layers of `fc_units`,
a `z_dim` code, the standard normal prior, a sigmoid decoder; Adam at `g_lr`). While task t is
learned, the scholar as it ended task t-1 (frozen) replays: its VAE decodes z ~ N(0, I), its
solver labels the result. Each step, r = 1/t:

- solver: r * CE(current batch) + (1 - r) * CE(replayed batch, the previous solver's argmax over
  every output), or with `distill` the distillation of its scores at `temperature`;
- VAE: r * [BCE + KL/D](current batch) + (1 - r) * [BCE + KL/D](replayed batch), BCE the mean
  over pixels, D the input's size.

Replay through feedback (the generator inside the classifier) is `bir` with its conditional
parts off: `bir` with `prior=standard gate_prop=0 distill=false`.

Deviations (from a line-by-line reading of the reference):
- Random draws come from JAX's keys, not torch's; `F.binary_cross_entropy`'s gradient at a
  clamped log is 0 here.
- As the reference's default `--active-classes all`, the solver's cross-entropy and the previous
  solver's argmax are over every output (`dgr` takes the argmax over the classes seen).
  `task_heads=k` is its task-IL training: each current item's softmax over its task's k
  classes; the replayed batch scored on every earlier task's head in turn (targets the previous
  solver's argmax, or scores, within that head), the mean over those tasks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from cljax.core.config import Hyperparams, hparam
from cljax.methods import HostHooks, Method, configure, scholar
from cljax.methods.common import (
    TASK_HEADS_DOC,
    NetState,
    create_net,
    cross_entropy,
    forward,
    on_heads,
    on_task_heads,
    task_heads_of,
)
from cljax.models import vae

TEST_CONFIG = {"fc_units": 8, "z_dim": 3}


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    lr: float = hparam(1e-3, "the solver's Adam learning rate (betas 0.9, 0.999)", gt=0)
    g_lr: float = hparam(1e-3, "the VAE's Adam learning rate (the reference: lr)", gt=0)
    fc_units: int = hparam(400, "units of the VAE's hidden layers", ge=1)
    fc_layers: int = hparam(3, "the VAE's fc_lay: encoder layers + the latent layer", ge=2)
    z_dim: int = hparam(100, "the VAE's latent units", ge=1)
    distill: bool = hparam(False, "replayed items' targets: the previous solver's soft scores")
    temperature: float = hparam(2.0, "distillation temperature", gt=0)
    replay: bool = hparam(True, "replay generated items (false: a fine-tuning scholar)")
    task_heads: int = hparam(0, TASK_HEADS_DOC, ge=0)


@struct.dataclass
class State:
    solver: NetState
    gen: train_state.TrainState
    prev_solver: Any  # params of the solver as the last task ended ...
    prev_stats: Any  # ... its BatchNorm statistics ({} for MLPs) ...
    prev_gen: Any  # ... and of the VAE
    task: jax.Array  # index of the current task
    in_shape: tuple = struct.field(pytree_node=False, default=())


@dataclasses.dataclass(frozen=True)
class Parts:
    config: Config
    model: Any
    input_fn: Any
    solver_tx: Any
    gen_tx: Any

    def vae(self, in_features: int) -> vae.CondVAE:
        c = self.config
        return vae.plain(in_features, c.fc_units, c.fc_layers, c.z_dim)


def init(parts: Parts, key, example_x) -> State:
    """A solver and a VAE for inputs like `example_x`."""
    k_s, k_g = jax.random.split(key)
    image = parts.input_fn(example_x, None, False)
    flat = image.reshape((image.shape[0], -1))
    solver = create_net(parts.model, parts.solver_tx, k_s, image)
    net = parts.vae(flat.shape[-1])
    params = net.init(k_g, flat, jnp.zeros((flat.shape[0], parts.config.z_dim)))["params"]
    gen = train_state.TrainState.create(apply_fn=net.apply, params=params, tx=parts.gen_tx)
    return State(
        solver=solver,
        gen=gen,
        prev_solver=solver.params,
        prev_stats=solver.batch_stats,
        prev_gen=params,
        task=jnp.int32(0),
        in_shape=tuple(image.shape[1:]),
    )


def begin_task(state: State, task, key) -> State:
    """Records the task's index (r = 1 / (index + 1); replay from the second task on)."""
    del key
    return state.replace(task=jnp.int32(task.index))


def end_task(state: State, task, data, key) -> State:
    """The solver and the VAE as they end the task become the replay's source."""
    del task, data, key
    return state.replace(
        prev_solver=state.solver.params,
        prev_stats=state.solver.batch_stats,
        prev_gen=state.gen.params,
    )


def generate(parts: Parts, state: State, params, key, n: int):
    """`n` flat items the VAE with `params` decodes from z ~ N(0, I)."""
    net = parts.vae(vae.input_size(params))
    z = jax.random.normal(key, (n, parts.config.z_dim))
    return net.apply({"params": params}, z, method=vae.CondVAE.decode)


def train_step(parts: Parts, state: State, batch, key):
    """The solver, then the VAE, one Adam step each on r * the current batch + (1 - r) * the
    replayed one (see the module's docstring)."""
    c = parts.config
    k_aug, k_gen, k_eps, k_eps_r = jax.random.split(key, 4)
    image = parts.input_fn(batch["x"], k_aug, True)
    y = batch["y"]
    n = image.shape[0]
    flat = image.reshape((n, -1))
    replaying = (state.task > 0) & c.replay
    r = jnp.where(replaying, 1.0 / (state.task.astype(jnp.float32) + 1.0), 1.0)
    replayed = jax.lax.stop_gradient(generate(parts, state, state.prev_gen, k_gen, n))
    rep_image = replayed.reshape(image.shape)
    scores, _ = forward(state.solver, state.prev_solver, rep_image, state.prev_stats, train=False)
    scores = jax.lax.stop_gradient(scores)

    def replay_loss(rep_logits, heads=None):
        target = on_heads(scores, heads)
        if c.distill:
            return vae.kd_loss(on_heads(rep_logits, heads), target, c.temperature).mean()
        return cross_entropy(on_heads(rep_logits, heads), jnp.argmax(target, axis=-1)).mean()

    def solver_loss(params):
        solver = state.solver
        logits, stats = forward(solver, params, image, solver.batch_stats)
        rep_logits, stats = forward(solver, params, rep_image, stats, active=replaying)
        if c.task_heads:  # the replay scored on each earlier task's head, their mean
            classes = logits.shape[-1]
            logits = on_task_heads(logits, y, c.task_heads)
            tasks = jnp.arange(classes // c.task_heads)
            per_task = jax.vmap(
                lambda t: replay_loss(rep_logits, task_heads_of(t[None], classes, c.task_heads))
            )(tasks * c.task_heads)
            earlier = tasks < state.task
            rep = jnp.sum(jnp.where(earlier, per_task, 0.0)) / jnp.maximum(earlier.sum(), 1)
        else:
            rep = replay_loss(rep_logits)
        return r * cross_entropy(logits, y).mean() + (1.0 - r) * rep, stats

    (s_loss, stats), grads = jax.value_and_grad(solver_loss, has_aux=True)(state.solver.params)
    solver = state.solver.apply_gradients(grads=grads, batch_stats=stats)

    net = parts.vae(flat.shape[-1])

    def vae_loss(params):
        current = vae.plain_loss(net, params, flat, k_eps).mean()
        return r * current + (1.0 - r) * vae.plain_loss(net, params, replayed, k_eps_r).mean()

    g_loss, g_grads = jax.value_and_grad(vae_loss)(state.gen.params)
    gen = state.gen.apply_gradients(grads=g_grads)
    return state.replace(solver=solver, gen=gen), {"loss": s_loss, "g_loss": g_loss}


def sample(parts: Parts, state: State, key, per_class=8):
    """`num_classes * per_class` images of the current VAE (unconditional)."""
    n = parts.model.num_classes * per_class
    items = generate(parts, state, state.gen.params, key, n)
    return items.reshape((n, *state.in_shape)), None


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """DGR with a VAE generator; the solver is `model` (the benchmark's classifier)."""
    config = configure(Config, config, overrides)
    parts = Parts(
        config=config,
        model=model,
        input_fn=input_fn,
        solver_tx=optax.adam(config.lr, b1=0.9, b2=0.999, eps=1e-8),
        gen_tx=optax.adam(config.g_lr, b1=0.9, b2=0.999, eps=1e-8),
    )
    return Method(
        name="dgr_vae",
        config=config,
        init=functools.partial(init, parts),
        begin_task=begin_task,
        train_step=functools.partial(train_step, parts),
        end_task=end_task,
        predict=functools.partial(scholar.solver_predict, parts),  # the solver's logits
        host=HostHooks(sample=functools.partial(sample, parts)),
    )
