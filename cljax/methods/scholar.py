"""The scholar of generative replay, shared by DGR (`dgr`) and MeRGAN (`mergan`).

A scholar (Shin et al. 2017) is a solver (the benchmark's classifier, trained
with Adam) and a generator / critic pair (`cljax.models.gan`), plus frozen copies
of the previous solver and generator that replay earlier tasks. This module holds
their common settings (`ScholarConfig`), state, initialisation, the task hooks
and the solver's update; each method's step decides what is replayed and how.
Not a method itself (it has no `Config`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from cljax.core.config import Hyperparams, hparam
from cljax.methods import TaskInfo
from cljax.methods import generative as gan_lib
from cljax.methods.common import NetState, class_mask, create_net, cross_entropy, forward, predict
from cljax.models import gan as gan_models


@dataclasses.dataclass(frozen=True)
class ScholarConfig(Hyperparams):
    """Settings of the solver, the GAN and the replay mixture (each method adds its own)."""

    lr: float = hparam(1e-3, "Adam step size of the solver", gt=0)
    g_lr: float = hparam(1e-4, "Adam step size of the generator", gt=0)
    d_lr: float = hparam(1e-4, "Adam step size of the critic", gt=0)
    b1: float = hparam(0.0, "Adam beta1 of generator and critic (< 1)", ge=0)
    b2: float = hparam(0.9, "Adam beta2 of generator and critic (< 1)", ge=0)
    n_critic: int = hparam(5, "critic updates per generator update (real chunks a step)", ge=1)
    z_dim: int = hparam(100, "size of the generator's latent code", ge=1)
    gan: str = hparam("mlp", "generator / critic architecture", choices=gan_models.ARCHS)
    ratio: float = hparam(
        0.0, "weight r of the current task's data (0: 1/t)", ge=0, le=1, sweepable=False
    )
    replay: bool = hparam(True, "replay earlier tasks (false: a fine-tuning scholar)")

    def check(self) -> None:
        for name in ("b1", "b2"):
            if getattr(self, name) >= 1:
                raise ValueError(
                    f"{self.owner()} {name} must be < 1 (an Adam decay rate), "
                    f"got {getattr(self, name)!r}"
                )


@struct.dataclass
class ScholarState:
    """Solver, generator and critic `TrainState`s; frozen previous scholar; task bookkeeping."""

    solver: NetState
    gen: train_state.TrainState
    disc: train_state.TrainState
    prev_gen: Any
    prev_solver: Any  # the previous solver's params ...
    prev_stats: Any  # ... and its BatchNorm statistics, frozen with them ({} for MLPs)
    has_prev: jax.Array  # 1.0 once a previous scholar exists
    ratio: jax.Array  # weight r of the current task's data
    seen: jax.Array  # (C,) classes of earlier tasks
    current: jax.Array  # (C,) classes of the current task


class ScholarParts(NamedTuple):
    """The static pieces `make` builds once: modules, optimizers, the input function."""

    model: Any
    input_fn: Callable
    gans: Callable[[tuple], gan_models.GanParts]  # image shape -> GAN modules (cached)
    solver_tx: optax.GradientTransformation
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation


def scholar_parts(config: ScholarConfig, model, input_fn, gan_classes: int) -> ScholarParts:
    """The solver trains with Adam at `lr`; generator and critic with Adam at `g_lr` / `d_lr`
    and betas `(b1, b2)`. `gan_classes` > 0 makes the GAN conditional."""
    solver_tx = optax.adam(config.lr)
    g_tx = gan_lib.adam(config.g_lr, config.b1, config.b2)
    d_tx = gan_lib.adam(config.d_lr, config.b1, config.b2)

    @functools.cache
    def gans(image_shape):
        return gan_models.GanParts(config.gan, image_shape, gan_classes, config.z_dim)

    return ScholarParts(model, input_fn, gans, solver_tx, g_tx, d_tx)


def init(parts: ScholarParts, key, example_x) -> ScholarState:
    """A fresh scholar (solver, generator, critic) for inputs like `example_x`."""
    image = parts.input_fn(example_x, None, False)
    k_s, k_g = jax.random.split(key)
    solver = create_net(parts.model, parts.solver_tx, k_s, image)
    gen, disc = parts.gans(image.shape[1:]).init_states(k_g, image, parts.g_tx, parts.d_tx)
    no_classes = jnp.zeros(parts.model.num_classes, bool)
    return ScholarState(
        solver=solver,
        gen=gen,
        disc=disc,
        prev_gen=gen.params,
        prev_solver=solver.params,
        prev_stats=solver.batch_stats,
        has_prev=jnp.zeros(()),
        ratio=jnp.ones(()),
        seen=no_classes,
        current=no_classes,
    )


def solver_predict(parts: ScholarParts, state: ScholarState, x):
    """The solver's logits (of any scholar whose parts have `input_fn` and whose state has
    `solver`: `dgr`, `mergan`, and `dgr_vae`'s VAE scholar)."""
    return predict(state.solver, parts.input_fn(x, None, False))


def begin_task(config: ScholarConfig, num_classes: int, state, task: TaskInfo, key):
    """Marks the task's classes and sets the weight r of its real data (default 1/t)."""
    del key
    current = class_mask(task.classes, num_classes)
    r = config.ratio if config.ratio > 0 else 1.0 / (task.index + 1)
    return state.replace(current=current, ratio=jnp.where(state.has_prev > 0, r, 1.0))


def end_task(state, task, task_data, key):
    """Freezes the current generator and solver as the previous scholar."""
    del task, task_data, key
    return state.replace(
        prev_gen=state.gen.params,
        prev_solver=state.solver.params,
        prev_stats=state.solver.batch_stats,
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
