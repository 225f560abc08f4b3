"""Gradient-based Sample Selection (`gss`): Aljundi et al., NeurIPS 2019 (arXiv 1903.08671),
its greedy variant, as the DER paper ran it (Mammoth's `models/gss.py` and
`utils/gss_buffer.py` of the paper's release, commit 7ab9db9).

Training is ER's: cross-entropy over the current batch and `minibatch_size`
memory items (drawn without replacement). What differs is which items the memory
keeps. After each step the current batch (un-augmented) is offered to
`cljax.core.buffer.add_scored` with, from the network after the step (inference mode):

- the batch's score: `max_j cos(g_batch, g_j) + 1`, with `g_batch` the gradient of
  the batch's mean cross-entropy and `g_j` the per-item gradients of
  `gss_minibatch_size` stored items drawn at random (0.1 for the very first batch);
- each item's score: `max_j cos(g_i, g_j) + 1` with its own gradient `g_i`, needed
  only when some item of the batch finds the memory full (the batch that fills it
  included) and the batch's score is below 1 (computed only then, under `lax.cond`).

A high score means the gradient points where the memory's already do: once full,
a batch enters only when it disagrees with all of the sampled items (score < 1),
each of its items replacing a stored one drawn in proportion to the stored scores.

Where this deviates from Mammoth, and why:
- Mammoth's `batch_num` (repeated steps on one batch) is 1 in every tuned row;
  it is not a setting here.
- Per-item gradients are `vmap`ped (Mammoth loops, caching each stored item's
  gradient within a step: the same values).
- The scoring gradients run in inference mode with the running BatchNorm
  statistics, moving nothing, as Mammoth's `get_grads` (5dc82be
  `models/gss.py:37-48`, `self.net.eval()`). Their inputs are the un-augmented
  items through the test transform; Mammoth's are its `not_aug_inputs`,
  `ToTensor()` alone, so on CIFAR and Tiny ImageNet it scores images without
  the normalisation the network trains on (MNIST has none: the same there).
- While the buffer holds fewer than `minibatch_size` items, the replayed part of
  the step's batch is padded with repeats of weight 0 (Mammoth draws the items
  there are, none while it is empty): the same loss, and the repeats stay out of
  BatchNorm's batch statistics (`resnet18`'s `mask`), as in Mammoth's forward.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

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
    mixed_batch,
    predict_with,
    sgd_update,
)

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4, "gss_minibatch_size": 4}
FIRST_SCORE = 0.1  # Mammoth's score of the first batch (nothing stored to compare with)


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    gss_minibatch_size: int = hparam(
        10, "stored items whose gradients score each offered batch", ge=1
    )


@struct.dataclass
class GssState:
    net: NetState
    buffer: buffer_lib.Buffer
    scores: jax.Array  # (capacity,) each stored item's score


def flat_grad(net: NetState, x, y):
    """The gradient of the mean cross-entropy of prepared inputs `x`, inference mode, flat."""

    def loss(params):
        return cross_entropy(forward(net, params, x, net.batch_stats, train=False)[0], y).mean()

    return ravel_pytree(jax.grad(loss)(net.params))[0]


def item_grads(net: NetState, x, y):
    """Per-item flat gradients `(N, P)`."""
    return jax.vmap(lambda xi, yi: flat_grad(net, xi[None], yi[None]))(x, y)


def max_cosine(g, G, valid):
    """`max_j cos(g, G_j)` over the rows of `G` marked `valid` (torch's eps 1e-8 on norms)."""
    norms = jnp.maximum(jnp.linalg.norm(G, axis=-1), 1e-8) * jnp.maximum(jnp.linalg.norm(g), 1e-8)
    return jnp.max(jnp.where(valid, (G @ g) / norms, -jnp.inf))


def scores(net: NetState, x, y, stored_x, stored_y, valid, full):
    """`(batch score, item scores)` of prepared batch `(x, y)` against stored items (prepared)
    `stored_x, stored_y` marked `valid`; item scores only when `full` (some item of the batch
    will find the memory full) and the batch's score is below 1."""
    G = item_grads(net, stored_x, stored_y)
    batch = max_cosine(flat_grad(net, x, y), G, valid) + 1.0

    def per_item(_):
        return jax.vmap(lambda gi: max_cosine(gi, G, valid) + 1.0)(item_grads(net, x, y))

    need = full & (batch < 1.0)
    items = jax.lax.cond(need, per_item, lambda _: jnp.zeros(y.shape[0]), None)
    return batch, items


def train_step(config: Config, input_fn, state: GssState, batch, key):
    """ER's step; then the batch offered to the memory by its gradients' scores."""
    k_cur, k_buf, k_score, k_add = jax.random.split(key, 4)
    x, y, weight = mixed_batch(state, batch, k_cur, k_buf, config.minibatch_size, input_fn)

    def loss_fn(params):
        logits, stats = forward(state.net, params, x, state.net.batch_stats, weight=weight)
        return masked_mean(cross_entropy(logits, y), weight), (stats, None)

    net, loss, _ = sgd_update(state.net, loss_fn)
    buffer = state.buffer
    idx, ok = buffer_lib.sample_indices(buffer, k_score, config.gss_minibatch_size)
    stored = buffer_lib.gather(buffer, idx)
    plain = input_fn(batch["x"], None, False)
    batch_score, item_scores = scores(
        net,
        plain,
        batch["y"],
        input_fn(stored["x"], None, False),
        stored["y"],
        ok,
        buffer.num_seen + batch["y"].shape[0] > buffer.capacity,
    )
    batch_score = jnp.where(buffer.num_seen > 0, batch_score, FIRST_SCORE)
    # a first batch larger than the memory: its overflow items, with nothing stored to
    # compare with, take the first batch's score too (Mammoth fails on this case)
    item_scores = jnp.where(buffer.num_seen > 0, item_scores, FIRST_SCORE)
    items = {"x": batch["x"], "y": batch["y"]}
    new_buffer, new_scores = buffer_lib.add_scored(
        buffer, state.scores, items, batch_score, item_scores, k_add
    )
    return GssState(net=net, buffer=new_buffer, scores=new_scores), {"loss": loss}


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """GSS (greedy) with SGD at `lr`, a memory of `buffer_size` scored items."""
    config = configure(Config, config, overrides)
    tx = optax.sgd(config.lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        example = {"x": example_x[0], "y": jnp.zeros((), jnp.int32)}
        buffer = buffer_lib.init(config.buffer_size, example)
        return GssState(net=net, buffer=buffer, scores=jnp.zeros(config.buffer_size))

    return Method(
        name="gss",
        config=config,
        init=init,
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
    )
