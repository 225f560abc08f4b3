"""Deep Generative Replay (`dgr`): Shin, Lee, Kim, Kim, NIPS 2017 (arXiv 1705.08690).

A scholar = (generator, solver). No real past data is kept: for task t > 1 the
generator learns the mixture of real current inputs and samples of the
previous generator, and the solver learns real current data plus replayed
inputs labelled by the previous solver. Loss of the solver:
r * CE(S(x), y) + (1 - r) * CE(S(x'), argmax S_prev(x')), x' ~ G_prev, r = 1/t.

Settings (hparams): the solver is the benchmark's classifier trained with Adam
(`lr`, 1e-3 as in van de Ven's re-implementation); the generator is a WGAN-GP
(as the paper) with `n_critic` critic updates per generator update, Adam
(`g_lr` 1e-4, beta1 0, beta2 0.9), or the non-saturating loss (`gan_loss=ns`).
Each step consumes `n_critic` real chunks of the driver's batch (batch_size =
n_critic * chunk); the solver trains on the first chunk plus as many replayed
samples, once per step, so the solver and generator run the same number of
iterations per task. `soft_targets=true` replays the previous solver's softmax
instead of its argmax; `replay=false` turns replay off (a fine-tuning scholar).

Deviations: the generator makes images in the classifier's input space
(28x28 in [0, 1] for MNIST) rather than padded 32x32; the mixture of real and
replayed data is expressed by per-sample weights r and 1 - r in fixed-size
batches (so each task compiles once) rather than by drawing r of each batch.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from cljax.methods import Method, TaskInfo
from cljax.methods import generative as gan_lib
from cljax.methods.common import NetState, create_net, cross_entropy, forward, predict
from cljax.methods.generative import check_gan_hparams, chunks
from cljax.models import gan as gan_models

HPARAMS = {
    "lr": 1e-3,
    "g_lr": 1e-4,
    "d_lr": 1e-4,
    "b1": 0.0,
    "b2": 0.9,
    "n_critic": 5,
    "z_dim": 100,
    "gan": "mlp",
    "gan_loss": "wgan-gp",
    "ratio": 0.0,
    "replay": True,
    "soft_targets": False,
    "temperature": 2.0,
}


@struct.dataclass
class DgrState:
    """Solver, generator and critic `TrainState`s; frozen previous scholar; task bookkeeping."""

    solver: NetState
    gen: train_state.TrainState
    disc: train_state.TrainState
    prev_gen: Any
    prev_solver: Any
    has_prev: jax.Array  # 1.0 once a previous scholar exists
    ratio: jax.Array  # weight r of the current task's data
    seen: jax.Array  # (C,) classes of earlier tasks
    current: jax.Array  # (C,) classes of the current task


class GanParts:
    """Generator and critic modules for one image shape, built once and reused."""

    def __init__(self, arch, image_shape, num_classes, z_dim):
        self.z_dim = z_dim
        self.g, self.d = gan_models.make_pair(arch, image_shape, num_classes)
        self.g_apply = lambda params, z, y=None: self.g.apply({"params": params}, z, y)
        self.d_apply = lambda params, x: self.d.apply({"params": params}, x)

    def sample_z(self, key, n):
        return jax.random.normal(key, (n, self.z_dim))

    def init_states(self, key, image, g_tx, d_tx):
        k_g, k_d = jax.random.split(key)
        z = jnp.zeros((1, self.z_dim))
        y = jnp.zeros((1,), jnp.int32)
        g_params = self.g.init(k_g, z, y)["params"]
        d_params = self.d.init(k_d, image)["params"]
        gen = train_state.TrainState.create(apply_fn=self.g_apply, params=g_params, tx=g_tx)
        disc = train_state.TrainState.create(apply_fn=self.d_apply, params=d_params, tx=d_tx)
        return gen, disc


def init_scholar(key, image, model, parts, solver_tx, g_tx, d_tx) -> DgrState:
    """A fresh scholar (solver, generator, critic) for inputs shaped like `image` (1, ...)."""
    k_s, k_g = jax.random.split(key)
    solver = create_net(model, solver_tx, k_s, image)
    gen, disc = parts(image.shape[1:]).init_states(k_g, image, g_tx, d_tx)
    no_classes = jnp.zeros(model.num_classes, bool)
    return DgrState(
        solver=solver,
        gen=gen,
        disc=disc,
        prev_gen=gen.params,
        prev_solver=solver.params,
        has_prev=jnp.zeros(()),
        ratio=jnp.ones(()),
        seen=no_classes,
        current=no_classes,
    )


def scholar_setup(model, input_fn, gan, gan_classes, z_dim, lr, g_lr, d_lr, b1, b2):
    """`(parts, init)`: the GAN modules per image shape (built once) and the scholar's `init`.

    The solver trains with Adam at `lr`; generator and critic with Adam at
    `g_lr` / `d_lr` and betas `(b1, b2)`. `gan_classes` > 0 makes the GAN conditional.
    """
    solver_tx = optax.adam(lr)
    g_tx, d_tx = gan_lib.adam(g_lr, b1, b2), gan_lib.adam(d_lr, b1, b2)

    @functools.cache
    def parts(image_shape):
        return GanParts(gan, image_shape, gan_classes, z_dim)

    def init(key, example_x):
        image = input_fn(example_x, None, False)
        return init_scholar(key, image, model, parts, solver_tx, g_tx, d_tx)

    return parts, init


def solver_predict(input_fn):
    """`predict(state, x)`: the solver's logits."""

    def predict_fn(state, x):
        return predict(state.solver, input_fn(x, None, False))

    return predict_fn


def begin_generative_task(state, task: TaskInfo, ratio: float, num_classes: int):
    """Marks the task's classes and sets the weight r of its real data (default 1/t)."""
    current = jnp.zeros(num_classes, bool).at[jnp.asarray(task.classes)].set(True)
    r = ratio if ratio > 0 else 1.0 / (task.index + 1)
    return state.replace(current=current, ratio=jnp.where(state.has_prev > 0, r, 1.0))


def end_generative_task(state, task_data, key, task):
    """Freezes the current generator and solver as the previous scholar."""
    del task_data, key, task
    return state.replace(
        prev_gen=state.gen.params,
        prev_solver=state.solver.params,
        has_prev=jnp.ones_like(state.has_prev),
        seen=state.seen | state.current,
    )


def solver_step(solver: NetState, x, y, x_rep, rep_targets, r):
    """One solver update: r * CE(current) + (1 - r) * CE(replayed, targets (labels or probs))."""

    def loss_fn(params):
        logits, stats = forward(solver, params, x, solver.batch_stats)
        loss = r * cross_entropy(logits, y).mean()
        rep_logits, stats = forward(solver, params, x_rep, stats)
        if rep_targets.ndim == 1:
            rep = cross_entropy(rep_logits, rep_targets)
        else:
            rep = optax.softmax_cross_entropy(rep_logits, rep_targets)
        return loss + (1.0 - r) * rep.mean(), stats

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(solver.params)
    return solver.apply_gradients(grads=grads, batch_stats=stats), loss


def make(
    *,
    model,
    input_fn,
    lr: float = HPARAMS["lr"],
    g_lr: float = HPARAMS["g_lr"],
    d_lr: float = HPARAMS["d_lr"],
    b1: float = HPARAMS["b1"],
    b2: float = HPARAMS["b2"],
    n_critic: int = HPARAMS["n_critic"],
    z_dim: int = HPARAMS["z_dim"],
    gan: str = HPARAMS["gan"],
    gan_loss: str = HPARAMS["gan_loss"],
    ratio: float = HPARAMS["ratio"],
    replay: bool = HPARAMS["replay"],
    soft_targets: bool = HPARAMS["soft_targets"],
    temperature: float = HPARAMS["temperature"],
) -> Method:
    """DGR with a `gan` (one of `gan.ARCHS`) generator trained by `gan_loss`."""
    check_gan_hparams(n_critic, gan_loss, ratio, gan)
    num_classes = model.num_classes
    parts, init = scholar_setup(model, input_fn, gan, 0, z_dim, lr, g_lr, d_lr, b1, b2)

    def begin_task(state, task, key):
        del key
        return begin_generative_task(state, task, ratio, num_classes)

    def train_step(state, batch, key):
        k_aug, k_rep, k_gan = jax.random.split(key, 3)
        x = input_fn(batch["x"], k_aug, True)
        p = parts(x.shape[1:])
        real = chunks(x, n_critic)
        b = real.shape[1]
        r = jnp.where(replay, state.ratio, 1.0)
        replayed = p.g_apply(state.prev_gen, p.sample_z(k_rep, n_critic * b))
        replayed = jax.lax.stop_gradient(chunks(replayed, n_critic))
        mixed = jnp.concatenate([real, replayed], axis=1)
        weights = jnp.concatenate(
            [jnp.full((n_critic, b), r), jnp.full((n_critic, b), 1.0 - r)], axis=1
        )
        gen, disc, metrics = gan_lib.critic_then_generator(
            state.gen,
            state.disc,
            mixed,
            weights,
            k_gan,
            sample_z=lambda k: p.sample_z(k, 2 * b),
            loss=gan_loss,
        )
        prev_logits, _ = forward(
            state.solver, state.prev_solver, replayed[0], state.solver.batch_stats, train=False
        )
        if soft_targets:
            targets = jax.nn.softmax(prev_logits / temperature)
        else:
            targets = jnp.argmax(prev_logits, -1)
        solver, s_loss = solver_step(
            state.solver, real[0], chunks(batch["y"], n_critic)[0], replayed[0], targets, r
        )
        new = state.replace(solver=solver, gen=gen, disc=disc)
        return new, {"loss": s_loss, **metrics}

    def sample(state, key, per_class=8):
        """`num_classes * per_class` samples of the current generator (unconditional)."""
        z = jax.random.normal(key, (num_classes * per_class, z_dim))
        return state.gen.apply_fn(state.gen.params, z), None

    hparams = {
        "lr": lr,
        "g_lr": g_lr,
        "d_lr": d_lr,
        "b1": b1,
        "b2": b2,
        "n_critic": n_critic,
        "z_dim": z_dim,
        "gan": gan,
        "gan_loss": gan_loss,
        "ratio": ratio,
        "replay": replay,
        "soft_targets": soft_targets,
        "temperature": temperature,
    }
    return Method(
        name="dgr",
        init=init,
        begin_task=begin_task,
        train_step=train_step,
        end_task=end_generative_task,
        predict=solver_predict(input_fn),
        hparams=hparams,
        sample=sample,
    )
