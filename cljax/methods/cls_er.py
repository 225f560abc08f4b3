"""CLS-ER (`cls_er`): Arani, Sarfraz and Zonooz, *Learning Fast, Learning Slow: A General
Continual Learning Method based on Complementary Learning System*, ICLR 2022 (arXiv
2201.12604), as its authors' code runs it (NeurAI-Lab/CLS-ER, `models/clser.py`, 73f3e63).

ER with two exponential moving averages of the working model's weights: a plastic one
(updated often, short memory) and a stable one (updated rarely, long memory). On each
replayed item the consistency target is the logits of whichever of the two gives the
item's label the higher probability. Loss:
CE([x; x_buf], [y; y_buf]) + reg_weight * mean((f(x_buf) - z_ema(x_buf))^2).

As the authors' code does, step by step: draw `minibatch_size` buffer items (none while it
is empty); forward the stable and the plastic model on them (training mode: their own
BatchNorm statistics move with it); pick per item the target model by
`p_stable(y) > p_plastic(y)`; forward the working model on the replayed items for the
consistency term, then on the concatenation of the current batch and the replayed items
for the cross-entropy (the mean over both); one SGD step; offer the current (raw) batch to
the reservoir; then, with probability `plastic_model_update_freq`, move the plastic
model's weights towards the working model's with decay
`min(1 - 1 / (step + 1), plastic_model_alpha)` (step: steps taken so far, this one
included), and the same for the stable one. Only weights are averaged, not BatchNorm
statistics (the code averages `parameters()`). Predictions are the stable model's
(`eval_model`), as the paper reports; the reference's evaluation prints all three.

While the buffer holds fewer items than `minibatch_size` the replayed part is padded with
slots of weight 0, out of both losses and of BatchNorm's batch statistics (the reference
draws the items there are). Deviations: the update draws (`torch.rand(1)`) come from
JAX keys, so a seed gives other draws than the reference's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax.core import buffer as buffer_lib
from cljax.core.config import hparam
from cljax.methods import Method, configure
from cljax.methods.common import (
    NetState,
    ReplayConfig,
    create_net,
    cross_entropy,
    forward,
    masked_mean,
    predict,
    replay_batch,
)

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4, "reg_weight": 0.5}


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    reg_weight: float = hparam(0.1, "weight of the consistency MSE on replayed items", ge=0)
    stable_model_update_freq: float = hparam(
        0.7, "probability that a step updates the stable model", ge=0, le=1
    )
    stable_model_alpha: float = hparam(0.999, "the stable model's largest EMA decay", ge=0, le=1)
    plastic_model_update_freq: float = hparam(
        0.9, "probability that a step updates the plastic model", ge=0, le=1
    )
    plastic_model_alpha: float = hparam(0.999, "the plastic model's largest EMA decay", ge=0, le=1)
    eval_model: str = hparam(
        "stable",
        "the model that predicts: the stable EMA (the paper's), the plastic EMA, or the "
        "working model",
        choices=("stable", "plastic", "working"),
    )


@struct.dataclass
class EmaModel:
    """An exponential moving average of the working model's weights, with BatchNorm
    statistics of its own."""

    params: Any
    batch_stats: Any


@struct.dataclass
class State:
    net: NetState
    buffer: buffer_lib.Buffer
    plastic: EmaModel
    stable: EmaModel
    step: jax.Array  # steps taken so far (the reference's `global_step`)


def _ema(model: EmaModel, params, step, alpha_max, update) -> EmaModel:
    alpha = jnp.minimum(1.0 - 1.0 / (step + 1.0), alpha_max)
    moved = jax.tree.map(lambda e, p: alpha * e + (1.0 - alpha) * p, model.params, params)
    return model.replace(
        params=jax.tree.map(lambda new, old: jnp.where(update, new, old), moved, model.params)
    )


def train_step(config: Config, input_fn, state: State, batch, key):
    """Consistency MSE towards the better EMA model on replayed items, CE on the batch and
    the replayed items; reservoir insertion; the two EMA updates, each with its probability."""
    k_cur, k_buf, k_add, k_plastic, k_stable = jax.random.split(key, 5)
    x = input_fn(batch["x"], k_cur, True)
    buf_x, items, valid = replay_batch(state, k_buf, config.minibatch_size, input_fn)
    active = state.buffer.num_seen > 0
    net = state.net

    def ema_forward(model: EmaModel):
        logits, stats = forward(
            net, model.params, buf_x, model.batch_stats, active=active, weight=valid
        )
        return logits, model.replace(batch_stats=stats)

    stable_logits, stable = ema_forward(state.stable)
    plastic_logits, plastic = ema_forward(state.plastic)
    label = jax.nn.one_hot(items["y"], stable_logits.shape[-1])
    p_stable = jnp.sum(jax.nn.softmax(stable_logits) * label, axis=-1)
    p_plastic = jnp.sum(jax.nn.softmax(plastic_logits) * label, axis=-1)
    target = jnp.where((p_stable > p_plastic)[:, None], stable_logits, plastic_logits)
    target = jax.lax.stop_gradient(target)
    x_all = jnp.concatenate([x, buf_x])
    y_all = jnp.concatenate([batch["y"], items["y"]])
    w_all = jnp.concatenate([jnp.ones(batch["y"].shape[0]), valid])

    def loss_fn(params):
        out, stats = forward(net, params, buf_x, net.batch_stats, active=active, weight=valid)
        consistency = masked_mean(jnp.mean((out - target) ** 2, axis=-1), valid)
        logits, stats = forward(net, params, x_all, stats, weight=w_all)
        loss = masked_mean(cross_entropy(logits, y_all), w_all)
        return loss + config.reg_weight * consistency, (stats, None)

    (loss, (stats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    net = net.apply_gradients(grads=grads, batch_stats=stats)
    new_buffer = buffer_lib.add(state.buffer, {"x": batch["x"], "y": batch["y"]}, k_add)
    step = state.step + 1
    plastic = _ema(
        plastic,
        net.params,
        step,
        config.plastic_model_alpha,
        jax.random.uniform(k_plastic) < config.plastic_model_update_freq,
    )
    stable = _ema(
        stable,
        net.params,
        step,
        config.stable_model_alpha,
        jax.random.uniform(k_stable) < config.stable_model_update_freq,
    )
    new = State(net=net, buffer=new_buffer, plastic=plastic, stable=stable, step=step)
    return new, {"loss": loss}


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """CLS-ER with SGD at `lr`, a reservoir of `buffer_size` raw items, the plastic and
    stable EMA models and the consistency weight `reg_weight`."""
    config = configure(Config, config, overrides)
    tx = optax.sgd(config.lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        copy = EmaModel(params=net.params, batch_stats=net.batch_stats)
        example = {"x": example_x[0], "y": jnp.zeros((), jnp.int32)}
        return State(
            net=net,
            buffer=buffer_lib.init(config.buffer_size, example),
            plastic=copy,
            stable=copy,
            step=jnp.zeros((), jnp.int32),
        )

    def predict_fn(state: State, x):
        chosen = {"stable": state.stable, "plastic": state.plastic}.get(config.eval_model)
        net = state.net
        if chosen is not None:
            net = net.replace(params=chosen.params, batch_stats=chosen.batch_stats)
        return predict(net, input_fn(x, None, False))

    return Method(
        name="cls_er",
        config=config,
        init=init,
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_fn,
    )
