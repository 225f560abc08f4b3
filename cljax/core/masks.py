"""Learned unit masks with an annealed sigmoid, shared by `dyn_expand` and `dgm`.

A layer's mask is `m = sigmoid(s * e)` for a learnable embedding `e` (one value
per unit or channel). Within a task `s` rises linearly over each epoch's
batches from `1/s_max` to `s_max` (HAT, Serra et al. 2018, eq. 3; DER, Yan et
al. 2021, sec. 3.3), so the mask starts soft and ends (almost) binary. At
inference and for pruning the mask is binarised: `e > 0`, which is
`sigmoid(s_max * e) > 0.5`.

Gradient compensation (`gate`): the gradient of `e` through `sigmoid(s * e)` is
`s * sigmoid'(s * e) * dL/dm`, which vanishes or explodes with `s`. Both papers
rescale it to be independent of `s`: DER multiplies by
`sigmoid'(e) / (s * sigmoid'(s * e))`, HAT by
`s_max * [cosh(s e) + 1] / (s * [cosh(e) + 1])`; the compensated gradients are
`sigmoid'(e) * dL/dm` and `s_max * sigmoid'(e) * dL/dm`. `gate` builds exactly
that gradient (forward value `sigmoid(s * e)`, backward `scale * sigmoid'(e)`)
without dividing two vanishing numbers; with `clamp` it is HAT's and the DGM
authors' own computation (`s e` clipped to +-50 in the cosh of the numerator), under
which the gradient of a saturated mask vanishes and the mask locks. `clamp` (the
function) bounds embeddings to `[-bound, bound]` (HAT's `thres_emb = 6`):
`dyn_expand` applies it after each update so the annealing stays stable; `dgm` does
not, as the DGM authors' code never does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EMBEDDING_BOUND = 6.0


def anneal(batch_in_epoch, batches_per_epoch, s_max: float):
    """`s` for batch `b` (0-based) of an epoch of `B`: `1/s_max + (s_max - 1/s_max) * b / (B - 1)`."""
    frac = batch_in_epoch / jnp.maximum(batches_per_epoch - 1, 1)
    return 1.0 / s_max + (s_max - 1.0 / s_max) * frac


def gate(e, s, scale: float = 1.0, clamp: float | None = None):
    """`sigmoid(s * e)` whose gradient with respect to `e` is `scale * sigmoid'(e)` times the
    upstream one.

    With `clamp` (HAT and the DGM authors' code: 50) the gradient is theirs, computed as
    they compute it: the gradient through `sigmoid(s e)` (autograd's `y (1 - y)`, y the
    sigmoid's float32 output) times `scale / s * [cosh(clip(s e, +-clamp)) + 1] /
    [cosh(e) + 1]`. While `|s e|` is small this equals the above; once a mask saturates it
    vanishes and the mask locks: past `|s e|` = clamp on either side, and already past
    `s e` ~ 17 on the positive side, where `y` rounds to 1 in float32.
    """
    hard = jax.lax.stop_gradient(jax.nn.sigmoid(s * e))
    if clamp is None:
        soft = jax.nn.sigmoid(e)
        return hard + scale * (soft - jax.lax.stop_gradient(soft))
    se = jax.lax.stop_gradient(s * e)
    num = jnp.cosh(jnp.clip(se, -clamp, clamp)) + 1.0
    factor = jax.lax.stop_gradient(scale * hard * (1.0 - hard) * num / (jnp.cosh(e) + 1.0))
    return hard + factor * (e - jax.lax.stop_gradient(e))


def binary(e):
    """The mask at inference: 1 where `e > 0` (`sigmoid(s_max * e) > 0.5`), else 0."""
    return (e > 0).astype(jnp.float32)


def clamp(embeddings, bound: float = EMBEDDING_BOUND):
    """Embeddings clamped to `[-bound, bound]`, as HAT does after every update."""
    return jax.tree.map(lambda e: jnp.clip(e, -bound, bound), embeddings)
