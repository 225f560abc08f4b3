"""Classifier heads on a backbone's features: the cosine classifier (ER-ACE as Mammoth
runs it, LUCIR) and the fixed regular-polytope classifier (RPC)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cljax.models.backbones import takes_mask


def _torch_linear_init(key, shape, dtype=jnp.float32):
    """torch's `nn.Linear` weight init (kaiming_uniform with a = sqrt(5)): U(+-1/sqrt(fan_in)),
    for a `(classes, fan_in)` matrix."""
    bound = 1.0 / np.sqrt(shape[1])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class CosineHead(nn.Module):
    """`scale * cos(features, w_c)` for every class c: the features and each class's weight
    row divided by their L2 norm plus `eps` (Mammoth's `CustomLinear`, er_ace.py:15-33).

    `body` is a backbone built with `num_classes=None` (it returns its features);
    `learn_scale` makes `scale` a parameter (LUCIR's sigma). `parts=True` returns
    `(features, cosines, scale)` instead of the scores (LUCIR's losses read each)."""

    body: nn.Module
    num_classes: int
    scale: float = 10.0
    learn_scale: bool = False
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None, parts: bool = False):
        extra = {"mask": mask} if mask is not None and takes_mask(self.body) else {}
        feats = self.body(x, train=train, **extra).astype(jnp.float32)
        w = self.param("weight", _torch_linear_init, (self.num_classes, feats.shape[-1]))
        scale = self.scale
        if self.learn_scale:
            scale = self.param("scale", nn.initializers.constant(self.scale), ())
        f = feats / (_norm(feats) + self.eps)
        w = w / (_norm(w) + self.eps)
        return (feats, f @ w.T, scale) if parts else scale * f @ w.T


def _norm(x):
    """Row L2 norms (kept dims) whose gradient at a zero row is 0, as torch's `norm` (all-zero
    ReLU features are common; `jnp.linalg.norm`'s gradient there is NaN)."""
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


def regular_simplex(num_classes: int) -> np.ndarray:
    """`(num_classes - 1, num_classes)`: the columns are the vertices of a regular simplex
    centred at the origin, unit norm, pairwise cosine -1/(num_classes - 1) (Mammoth's
    `dsimplex`, rpc.py:14-54: the standard basis plus one vertex, centred and scaled)."""
    m = num_classes - 1
    x = np.zeros((m, num_classes))
    x[:, :m] = np.eye(m)
    x[:, m] = (1 - np.sqrt(1 + m)) / m
    x -= x.sum(axis=1, keepdims=True) / num_classes
    x /= np.linalg.norm(x[:, 0])
    return x.astype(np.float32)
