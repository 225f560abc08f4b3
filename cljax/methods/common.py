"""Pieces shared by the classifier-based methods: the network state and its losses."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from cljax import buffer as buffer_lib


class NetState(train_state.TrainState):
    """A classifier's `TrainState` plus BatchNorm running statistics (empty for MLPs)."""

    batch_stats: Any = None


@struct.dataclass
class ReplayState:
    """State of the rehearsal methods: the network and the replay buffer."""

    net: NetState
    buffer: buffer_lib.Buffer


def create_net(model, tx, key, x) -> NetState:
    """Initialises `model` on input `x` and wraps it with optimizer `tx`."""
    variables = model.init(key, x, train=False)
    return NetState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
    )


def forward(net: NetState, params, x, batch_stats, train: bool = True, active=True):
    """Logits and updated BatchNorm statistics; `active=False` keeps the old statistics."""
    if not batch_stats:
        return net.apply_fn({"params": params}, x, train=train), batch_stats
    variables = {"params": params, "batch_stats": batch_stats}
    if not train:
        return net.apply_fn(variables, x, train=False), batch_stats
    logits, updates = net.apply_fn(variables, x, train=True, mutable=["batch_stats"])
    new_stats = jax.tree.map(
        lambda new, old: jnp.where(active, new, old), updates["batch_stats"], batch_stats
    )
    return logits, new_stats


def predict(net: NetState, x):
    """Inference logits."""
    logits, _ = forward(net, net.params, x, net.batch_stats, train=False)
    return logits


def predict_with(input_fn):
    """`predict(state, x)` for states whose network is `state.net`."""

    def predict_fn(state, x):
        return predict(state.net, input_fn(x, None, False))

    return predict_fn


def cross_entropy(logits, labels):
    """Per-example softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def masked_mean(values, weights):
    """Mean of `values` over entries with weight 1 (0 when every weight is 0)."""
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def sgd_update(net: NetState, loss_fn):
    """One optimizer step on `loss_fn(params) -> (loss, (batch_stats, aux))`."""
    (loss, (stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    return net.apply_gradients(grads=grads, batch_stats=stats), loss, aux


def replay_batch(state: ReplayState, key, n: int, input_fn):
    """`n` buffer items (inputs prepared for training), their stored fields and validity."""
    k_idx, k_aug = jax.random.split(key)
    idx, valid = buffer_lib.sample_indices(state.buffer, k_idx, n)
    items = buffer_lib.gather(state.buffer, idx)
    return input_fn(items["x"], k_aug, True), items, valid.astype(jnp.float32)


def count_params(tree) -> int:
    """Number of scalars in a pytree (parameter counts for `describe`)."""
    return int(sum(np.size(a) for a in jax.tree.leaves(tree)))


def check_buffer_hparams(buffer_size, minibatch_size):
    """Clear errors for buffer settings that cannot work."""
    if not isinstance(buffer_size, int) or buffer_size < 1:
        raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}")
    if not isinstance(minibatch_size, int) or minibatch_size < 1:
        raise ValueError(f"minibatch_size must be a positive int, got {minibatch_size!r}")
