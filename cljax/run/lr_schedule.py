"""Multistep learning-rate schedules inside the compiled task, for every method.

PyTorch's `MultiStepLR` as Mammoth runs it: a fresh scheduler each task, stepped once an
epoch, the learning rate `lr * gamma ** (milestones passed)` in epoch `e` of the task
(the X-DER protocol on Seq-CIFAR-100: 50 epochs, x0.1 after 35 and 45). The driver
attaches it to every `TrainState` of a method's state: the state's optimizer becomes
`optax.chain(its own, epoch_scale(milestones, gamma))`, which scales the optimizer's
update, so `lr` times the factor is what moves the parameters (as PyTorch's scheduler
scales the step of SGD, with or without momentum, and of Adam). The epoch of each step is
written into the chained state by the compiled step (`at_step`), from the task's steps per
epoch (`begin`), so a method that updates several times a step (MER) keeps the epoch of
the driver's step. Other parameter arithmetic a method does outside its optimizer (MER's
Reptile interpolation, SI's importance) is not scheduled, as in the reference.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class EpochScaleState(NamedTuple):
    """The chained transformation's state: the task's steps per epoch and this step's epoch."""

    per_epoch: jax.Array  # int32 ()
    epoch: jax.Array  # int32 ()


def factor(epoch, milestones: tuple[int, ...], gamma: float):
    """`gamma ** (milestones <= epoch)`: the learning rate's multiple in (0-based) `epoch`."""
    passed = sum((epoch >= m).astype(jnp.int32) for m in milestones)
    return jnp.asarray(gamma, jnp.float32) ** passed


def epoch_scale(milestones: tuple[int, ...], gamma: float) -> optax.GradientTransformation:
    """Scales the updates by `factor(state.epoch, milestones, gamma)`."""

    def init(params):
        del params
        return EpochScaleState(jnp.ones((), jnp.int32), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        f = factor(state.epoch, milestones, gamma)
        return jax.tree.map(lambda u: (f * u).astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def _is_net(x) -> bool:
    return isinstance(x, train_state.TrainState)


def _attached(net) -> bool:
    return isinstance(net.opt_state, tuple) and isinstance(net.opt_state[-1], EpochScaleState)


def attach(state, milestones: tuple[int, ...], gamma: float):
    """`state` with `epoch_scale` chained after the optimizer of each `TrainState` in it that
    has none yet (one built afresh by a method's `begin_task` gets it again)."""
    if not milestones:
        return state

    def wrap(net):
        if not _is_net(net) or _attached(net):
            return net
        return chain_after(net, epoch_scale(milestones, gamma))

    return jax.tree.map(wrap, state, is_leaf=_is_net)


def chain_after(net, transformation: optax.GradientTransformation):
    """`TrainState` `net` with `transformation` applied after its optimizer, its state
    initialised beside the optimizer's (the schedule here; a grid's lr, `cljax.run.sweep`)."""
    return net.replace(
        tx=optax.chain(net.tx, transformation),
        opt_state=(net.opt_state, transformation.init(net.params)),
    )


def _map_scales(state, fn):
    return jax.tree.map(
        lambda s: fn(s) if isinstance(s, EpochScaleState) else s,
        state,
        is_leaf=lambda x: isinstance(x, EpochScaleState),
    )


def begin(state, per_epoch: int):
    """`state` at the start of a task of `per_epoch` steps an epoch: the scheduler afresh."""
    return _map_scales(
        state,
        lambda s: EpochScaleState(jnp.full_like(s.per_epoch, per_epoch), jnp.zeros_like(s.epoch)),
    )


def at_step(state, i):
    """`state` before step `i` (0-based, in the task) of the compiled chunk: its epoch set."""
    return _map_scales(state, lambda s: s._replace(epoch=(i // s.per_epoch).astype(s.epoch.dtype)))
