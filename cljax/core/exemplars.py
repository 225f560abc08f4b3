"""A class-balanced exemplar memory chosen by herding (iCaRL, Rebuffi et al. 2017).

`Memory` holds raw inputs `x`, labels `y`, each item's herding `rank` within
its class and a `valid` flag, in a fixed number of slots. After a task,
`update` first keeps each old class's `m` best-ranked exemplars (iCaRL's
ReduceExemplarSet: herding order means the first `m` are a herding choice of
size `m`), then fills free slots with `m` exemplars per new class chosen by
`herding` on L2-normalised features. Everything is static-shaped and jittable:
`m` and the new classes are Python values known when the task ends.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Memory:
    """Exemplar slots: raw inputs, labels, herding rank within the class, validity."""

    x: jax.Array
    y: jax.Array
    rank: jax.Array
    valid: jax.Array


def init(capacity: int, example_x) -> Memory:
    """An empty memory of `capacity` slots for items shaped like `example_x` (one item)."""
    example_x = jnp.asarray(example_x)
    return Memory(
        x=jnp.zeros((capacity, *example_x.shape), example_x.dtype),
        y=jnp.zeros(capacity, jnp.int32),
        rank=jnp.zeros(capacity, jnp.int32),
        valid=jnp.zeros(capacity, bool),
    )


def normalize(features):
    """Rows scaled to unit L2 norm."""
    return features / jnp.maximum(jnp.linalg.norm(features, axis=-1, keepdims=True), 1e-12)


_normalize = normalize  # `update`'s argument of the same name shadows it there


def herding(features, members, m: int):
    """Indices of `m` exemplars of one class, in herding order.

    `features` (N, D) (L2-normalised in iCaRL), `members` (N,) marks the class's rows.
    With `mu` the mean of the members' features, step k picks the unchosen
    member `i` minimising `|| mu - (sum of chosen + f_i) / k ||`: the exemplar
    that brings the running mean of the chosen set closest to the class mean.
    """
    members = members.astype(bool)
    mu = jnp.sum(features * members[:, None], 0) / jnp.maximum(members.sum(), 1)

    def pick(carry, k):
        total, free = carry
        candidates = (total[None] + features) / (k + 1.0)
        dist = jnp.sum((mu[None] - candidates) ** 2, -1)
        i = jnp.argmin(jnp.where(free, dist, jnp.inf))
        return (total + features[i], free.at[i].set(False)), i

    _, chosen = jax.lax.scan(pick, (jnp.zeros_like(mu), members), jnp.arange(m))
    return chosen


def update(memory: Memory, x, y, features, new_classes, m: int, normalize: bool = True) -> Memory:
    """Keeps `m` exemplars per old class and adds `m` per class of `new_classes` from `(x, y)`.

    `features` are the current network's features of `x` (L2-normalised here, as the
    iCaRL paper does, unless `normalize=False`: Mammoth's herding on raw features).
    The caller makes sure the slots suffice: (old classes + new classes) * m <= capacity.
    """
    valid = memory.valid & (memory.rank < m)
    if normalize:
        features = _normalize(features)
    classes = jnp.asarray(new_classes)
    chosen = jax.lax.map(lambda c: herding(features, y == c, m), classes)
    ranks = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), chosen.shape)
    # A class with fewer than m items fills only as many slots as it has items.
    ok = ranks < jnp.sum(y[None, :] == classes[:, None], 1)[:, None]
    chosen, ranks, ok = chosen.reshape(-1), ranks.reshape(-1), ok.reshape(-1)
    free = jnp.argsort(valid, stable=True)[: chosen.shape[0]]  # invalid slots first
    return Memory(
        x=memory.x.at[free].set(x[chosen]),
        y=memory.y.at[free].set(y[chosen].astype(jnp.int32)),
        rank=memory.rank.at[free].set(ranks),
        valid=valid.at[free].set(ok),
    )


def sample(memory: Memory, key, n: int):
    """`n` items drawn uniformly (with replacement) from the valid slots, and 0/1 weights.

    With an empty memory the weights are all 0.
    """
    logits = jnp.where(memory.valid, 0.0, -jnp.inf)
    any_valid = memory.valid.any()
    idx = jax.random.categorical(key, jnp.where(any_valid, logits, 0.0), shape=(n,))
    weight = jnp.where(any_valid, memory.valid[idx], False).astype(jnp.float32)
    return memory.x[idx], memory.y[idx], weight
