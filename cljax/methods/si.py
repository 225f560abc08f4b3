"""Synaptic Intelligence (`si`): Zenke, Poole, Ganguli, ICML 2017, as the DER paper ran it
(Mammoth's `models/si.py` at 5dc82be, Nov 2020), and as Mammoth runs it today.

Each step minimises `CE(f(x), y) + c * sum_i Omega_i (theta_i - theta_c_i)^2`: the
penalty's gradient is added in closed form (`2 c Omega (theta - theta_c)`), every
gradient element is clipped to [-1, 1] (`clip_grad_value_(..., 1)`) before the SGD
step. During a task each parameter gathers an importance `omega`, by `omega`:

- `"paper"` (the default; the code the DER paper ran, 5dc82be `models/si.py:57-62`):
  `omega += lr * g^2`, `g` the clipped gradient of the *total* loss (cross-entropy
  plus the penalty), as Mammoth reads `get_grads()` after `clip_grad_value_`;
- `"path"` (Mammoth since 2024, 20ff873 / 3ff5aaf; closer to Zenke et al.'s path
  integral): `omega += g_CE * (theta(before) - theta(after))`, `g_CE` the unclipped
  gradient of the cross-entropy alone;
- `"total"` (van de Ven et al.'s code, GMvandeVen/continual-learning e6d795a
  `models/cl/continual_learner.py` `update_importance_estimates`, which reads `p.grad` after
  the whole loss's backward pass): `omega += g * (theta(before) - theta(after))`, `g` the
  unclipped gradient of the cross-entropy plus the penalty.

That code's rows (`split-mnist*`) take `omega="total"` with Adam (`optimizer=adam`, lr 1e-3),
no clipping (`clip=0`), `xi` 0.1 (its `epsilon`) and, in task-IL, `task_heads=2`.

At the task's end it is normalised by how far the parameter moved plus `xi` and added
to the running importance, `Omega <- Omega + omega / ((theta - theta_c)^2 + xi)`; then
`theta_c <- theta` and `omega <- 0`. `Omega` is zero during the first task and
`theta_c` starts at the initial parameters.

Where this deviates from Mammoth: the reported loss is the cross-entropy alone (5dc82be
reports it plus `c` times the penalty; today's Mammoth the cross-entropy): nothing that
is learned. (Zenke et al.'s own code uses Adam and a per-task `omega` reset; the DER
paper's rows use Mammoth's SGD, which this follows.) Where `omega="total"` deviates from
van de Ven et al.'s code: nothing known (it updates `Omega` after the last task too, which
nothing reads).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from cljax.core.config import Hyperparams, hparam
from cljax.methods import Method, TaskInfo, configure
from cljax.methods.common import (
    TASK_HEADS_DOC,
    NetState,
    ce_and_grads,
    create_net,
    optimizer,
    optimizer_hparam,
    predict_with,
)


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    """Settings of `si`."""

    lr: float = hparam(0.1, "SGD step size", gt=0)
    c: float = hparam(1.0, "weight of the surrogate loss (the paper's c)", ge=0)
    xi: float = hparam(0.9, "damping of the importance normalisation (the paper's xi)", gt=0)
    clip: float = hparam(
        1.0, "each gradient element clipped to [-clip, clip] (Mammoth's 1; 0: no clipping)", ge=0
    )
    omega: str = hparam(
        "paper",
        "the importance gathered each step: paper (lr * g^2 of the clipped total gradient, "
        "the code the DER paper ran), path (g_CE * -delta theta, Mammoth since 2024) or "
        "total (g_total * -delta theta, unclipped: van de Ven et al.'s code)",
        choices=("paper", "path", "total"),
    )
    optimizer: str = optimizer_hparam()
    task_heads: int = hparam(0, TASK_HEADS_DOC, ge=0)


@struct.dataclass
class SiState:
    """The network, the running importance `Omega`, this task's path integral `omega` and
    the parameters at the last task's end `theta_c`."""

    net: NetState
    big_omega: dict
    small_omega: dict
    checkpoint: dict


def penalty_grads(config: Config, state: SiState):
    """The surrogate loss's gradient, `2 c Omega (theta - theta_c)`."""
    return jax.tree.map(
        lambda o, p, a: 2.0 * config.c * o * (p - a),
        state.big_omega,
        state.net.params,
        state.checkpoint,
    )


def train_step(config: Config, input_fn, state: SiState, batch, key):
    """One clipped SGD (or Adam) step on the CE plus the surrogate loss; `omega` gains
    `lr * g^2` (`"paper"`), `g_CE * (-delta theta)` (`"path"`) or `g * (-delta theta)`
    (`"total"`)."""
    x = input_fn(batch["x"], key, True)
    loss, stats, grads = ce_and_grads(state.net, x, batch["y"], config.task_heads)
    total = jax.tree.map(jnp.add, grads, penalty_grads(config, state))
    if config.clip:
        total = jax.tree.map(lambda g: jnp.clip(g, -config.clip, config.clip), total)
    net = state.net.apply_gradients(grads=total, batch_stats=stats)
    if config.omega == "paper":
        small = jax.tree.map(lambda w, g: w + config.lr * g**2, state.small_omega, total)
    else:
        small = jax.tree.map(
            lambda w, g, before, after: w + g * (before - after),
            state.small_omega,
            grads if config.omega == "path" else total,
            state.net.params,
            net.params,
        )
    return state.replace(net=net, small_omega=small), {"loss": loss}


def end_task(config: Config, state: SiState, task: TaskInfo, task_data, key):
    """`Omega += omega / ((theta - theta_c)^2 + xi)`; `theta_c <- theta`; `omega <- 0`."""
    del task, task_data, key
    params = state.net.params
    big = jax.tree.map(
        lambda big, w, p, a: big + w / ((p - a) ** 2 + config.xi),
        state.big_omega,
        state.small_omega,
        params,
        state.checkpoint,
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    return state.replace(big_omega=big, small_omega=zeros, checkpoint=params)


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """SI with SGD (or Adam) at `lr`, surrogate weight `c` and damping `xi`."""
    config = configure(Config, config, overrides)
    tx = optimizer(config.optimizer, config.lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        zeros = jax.tree.map(jnp.zeros_like, net.params)
        return SiState(net=net, big_omega=zeros, small_omega=zeros, checkpoint=net.params)

    return Method(
        name="si",
        config=config,
        init=init,
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
        end_task=lambda state, task, data, key: end_task(config, state, task, data, key),
    )
