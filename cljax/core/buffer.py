"""A fixed-capacity replay buffer as an immutable pytree, filled by reservoir sampling
(or first in, first out: `add(..., policy="fifo")`).

The buffer is plain data (`Buffer`) plus three pure functions, `init`, `add` and
`sample`, so it works inside `jit`, `lax.scan` and `vmap` (one buffer per seed)
and composes with any JAX training loop::

    buf = buffer.init(500, {"x": x[0], "y": y[0], "logits": logits[0]})
    buf = buffer.add(buf, {"x": x, "y": y, "logits": logits}, key)   # reservoir
    items = buffer.sample(buf, key, 32)                               # uniform

`add` follows Vitter's algorithm R item by item along the batch's leading axis:
the item with running index n (0-based, counting every item ever offered) is
stored in slot n while the buffer is not full; afterwards it replaces slot
j ~ U{0..n} if j < capacity, so every item offered so far is in the buffer with
probability capacity / num_seen. When two items of one batch pick the same slot
the later one wins, exactly as in a sequential loop.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Buffer:
    """Replay memory: `data` is a pytree whose leaves have leading axis `capacity`.

    Attributes:
      data: the stored items; rows `[0, size)` are filled.
      num_seen: int32 scalar, how many items were ever offered to `add`.
    """

    data: Any
    num_seen: jax.Array

    @property
    def capacity(self) -> int:
        """Number of slots (static)."""
        return jax.tree.leaves(self.data)[0].shape[0]

    @property
    def size(self) -> jax.Array:
        """Number of filled slots, `min(num_seen, capacity)`."""
        return jnp.minimum(self.num_seen, self.capacity)


def init(capacity: int, example: Any) -> Buffer:
    """Returns an empty buffer with `capacity` slots shaped like `example` (one item).

    Args:
      capacity: number of slots, a positive Python int.
      example: a pytree of arrays for ONE item, e.g. `{"x": x[0], "y": y[0]}`.
    """
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"buffer capacity must be a positive int, got {capacity!r}")

    def slots(leaf):
        leaf = jnp.asarray(leaf)
        return jnp.zeros((capacity, *leaf.shape), leaf.dtype)

    return Buffer(data=jax.tree.map(slots, example), num_seen=jnp.zeros((), jnp.int32))


def reservoir_slots(num_seen: jax.Array, batch: int, capacity: int, key: jax.Array) -> jax.Array:
    """Slot for each of `batch` offered items under algorithm R; `capacity` means "dropped".

    Items are taken in order; of several items that choose one slot only the
    last is kept (the earlier ones would be overwritten in a sequential loop).
    """
    n = num_seen + jnp.arange(batch, dtype=jnp.int32)
    j = jax.random.randint(key, (batch,), 0, n + 1, dtype=jnp.int32)
    slot = jnp.where(n < capacity, n, j)
    keep = slot < capacity
    order = jnp.arange(batch)
    overwritten = (
        (slot[:, None] == slot[None, :]) & (order[None, :] > order[:, None]) & keep[None, :]
    ).any(axis=1)
    return jnp.where(keep & ~overwritten, slot, capacity)


def fifo_slots(num_seen: jax.Array, batch: int, capacity: int) -> jax.Array:
    """Slot for each of `batch` offered items of a ring buffer (first in, first out): item n
    goes to slot `n % capacity`; of a batch larger than the buffer only the last `capacity`
    items are written (`capacity` means "dropped")."""
    order = jnp.arange(batch, dtype=jnp.int32)
    slot = (num_seen + order) % capacity
    return jnp.where(order >= batch - capacity, slot, capacity)


POLICIES = ("reservoir", "fifo")


def add(buffer: Buffer, items: Any, key: jax.Array, policy: str = "reservoir") -> Buffer:
    """Offers a batch of items (leading axis) to the buffer; returns the new buffer.

    Args:
      buffer: the current buffer.
      items: a pytree with the structure of the buffer's items and a leading
        batch axis.
      key: a `jax.random` key; the same key gives the same slots (unused by "fifo").
      policy: "reservoir" (algorithm R: a uniform sample of everything offered) or
        "fifo" (the last `capacity` items offered).
    """
    leaves = jax.tree.leaves(items)
    batch = leaves[0].shape[0]
    if policy == "reservoir":
        slots = reservoir_slots(buffer.num_seen, batch, buffer.capacity, key)
    elif policy == "fifo":
        slots = fifo_slots(buffer.num_seen, batch, buffer.capacity)
    else:
        raise ValueError(f"unknown buffer policy {policy!r}; choose one of {', '.join(POLICIES)}")

    def write(stored, new):
        if new.shape[1:] != stored.shape[1:]:
            raise ValueError(
                f"buffer.add: item shape {new.shape[1:]} does not match the buffer's "
                f"{stored.shape[1:]}"
            )
        return stored.at[slots].set(new.astype(stored.dtype), mode="drop")

    data = jax.tree.map(write, buffer.data, items)
    return Buffer(data=data, num_seen=buffer.num_seen + batch)


def keep_first_per_group(buffer: Buffer, groups: jax.Array, per_group: int) -> Buffer:
    """The first `per_group` stored items of each group (`groups`: an int per slot), in
    memory order, compacted group by group in ascending order; the other slots free
    (Mammoth's "empty the buffer, re-add the first k of each label": RPC, BiC)."""
    cap = buffer.capacity
    slot = jnp.arange(cap)
    stored = slot < buffer.size
    earlier = (
        (groups[:, None] == groups[None, :]) & stored[None, :] & (slot[None, :] < slot[:, None])
    )
    keep = stored & (jnp.sum(earlier, axis=1) < per_group)
    order = jnp.argsort(jnp.where(keep, groups * cap + slot, jnp.iinfo(jnp.int32).max))
    data = jax.tree.map(lambda leaf: leaf[order], buffer.data)
    return Buffer(data=data, num_seen=jnp.sum(keep).astype(buffer.num_seen.dtype))


def fill_balanced(buffer: Buffer, items: Any, classes, key: jax.Array, shuffle: bool = True):
    """The free slots filled with `items` (a dict of arrays with labels `"y"`) in a random
    order (`shuffle`; else in their order), an equal share of the free slots per class of
    `classes` (the remainder to classes drawn at random): the first items of each class in
    that order (Mammoth's class-balanced `end_task` fill: RPC, X-DER)."""
    cap = buffer.capacity
    k_extra, k_order = jax.random.split(key)
    y = items["y"]
    n_cls = len(classes)
    free = cap - buffer.size
    share = free // n_cls
    extra = jnp.argsort(jax.random.uniform(k_extra, (n_cls,))) < free - share * n_cls
    quota = share + extra.astype(share.dtype)
    n = y.shape[0]
    order = jax.random.permutation(k_order, n) if shuffle else jnp.arange(n)
    y_o = y[order]
    member = y_o[:, None] == jnp.asarray(classes)[None, :]
    which = jnp.argmax(member, axis=1)
    onehot = member.astype(jnp.int32)  # an item of another class counts for none
    rank = jnp.sum((jnp.cumsum(onehot, axis=0) - onehot) * onehot, axis=1)
    take = jnp.any(member, axis=1) & (rank < quota[which])
    first = jnp.argsort(jnp.where(take, jnp.arange(n), n + jnp.arange(n)))[: min(n, cap)]
    slots = jnp.where(
        jnp.arange(first.shape[0]) < jnp.sum(take), buffer.size + jnp.arange(first.shape[0]), cap
    )
    chosen = jax.tree.map(lambda a: a[order[first]], items)
    data = jax.tree.map(
        lambda stored, new: stored.at[slots].set(new.astype(stored.dtype), mode="drop"),
        buffer.data,
        chosen,
    )
    return Buffer(data=data, num_seen=buffer.size + jnp.sum(take))


def sample_indices(buffer: Buffer, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Indices of `n` stored items drawn uniformly without replacement, and a validity mask.

    While fewer than `n` items are stored, the first `size` indices are a random
    permutation of all stored items, the rest repeat them, and `valid` is
    False for the repeats (and everywhere while the buffer is empty), so a
    loss weighted by `valid` equals the loss over `min(n, size)` distinct items.
    """
    return sample_valid(jnp.arange(buffer.capacity) < buffer.size, key, n)


def sample_valid(valid, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Indices of `n` of the slots marked in `valid` (booleans, one per slot) drawn uniformly
    without replacement, and a validity mask; with fewer valid slots than `n`, as
    `sample_indices` (the valid ones in a random order, then repeats marked invalid)."""
    cap = valid.shape[0]
    scores = jax.random.uniform(key, (cap,))
    scores = jnp.where(valid, scores, -1.0)
    k = min(n, cap)
    _, top = jax.lax.top_k(scores, k)
    count = jnp.sum(valid)
    filled = jnp.maximum(jnp.minimum(count, k), 1)
    pos = jnp.arange(n)
    return top[pos % filled], pos < count


def sample(buffer: Buffer, key: jax.Array, n: int) -> Any:
    """Returns `n` items drawn uniformly without replacement from the filled part.

    See `sample_indices` for the case of fewer than `n` stored items and for a
    validity mask.
    """
    idx, _ = sample_indices(buffer, key, n)
    return gather(buffer, idx)


def gather(buffer: Buffer, idx: jax.Array) -> Any:
    """The stored items at slots `idx`."""
    return jax.tree.map(lambda leaf: leaf[idx], buffer.data)


def add_scored(
    buffer: Buffer, scores, items: Any, batch_score, item_scores, key: jax.Array
) -> tuple[Buffer, jax.Array]:
    """GSS's greedy insertion (Aljundi et al. 2019, as Mammoth's `gss_buffer`): `(buffer, scores)`
    after offering a batch of items in order.

    `scores` (capacity,) holds each stored item's score; `batch_score` is the score
    of the whole batch and `item_scores` (batch,) each item's (GSS: the largest
    cosine similarity + 1 of a gradient to the gradients of some stored items:
    high means redundant). While the buffer is not full an item takes the next
    slot with score `batch_score`. Once full, and only when `batch_score < 1`,
    an item draws a stored slot j with probability proportional to `scores` and
    replaces it with probability `scores[j] / (scores[j] + item_score)`, taking
    `item_score`; otherwise it is dropped. Items are offered one after another
    (a scan), so each sees the scores the previous ones left.
    """
    cap = buffer.capacity
    batch = jax.tree.leaves(items)[0].shape[0]

    def offer(carry, inp):
        data, scores, n = carry
        item, own, k = inp
        k_slot, k_keep = jax.random.split(k)
        full = n >= cap
        logits = jnp.where(scores > 0, jnp.log(jnp.maximum(scores, 1e-30)), -jnp.inf)
        j = jax.random.categorical(k_slot, logits)
        accept = jax.random.uniform(k_keep) < scores[j] / (scores[j] + own)
        replace = full & (batch_score < 1) & accept
        slot = jnp.where(full, jnp.where(replace, j, cap), n)
        data = jax.tree.map(lambda d, v: d.at[slot].set(v.astype(d.dtype), mode="drop"), data, item)
        scores = scores.at[slot].set(jnp.where(full, own, batch_score), mode="drop")
        return (data, scores, n + 1), None

    keys = jax.random.split(key, batch)
    (data, scores, num_seen), _ = jax.lax.scan(
        offer, (buffer.data, scores, buffer.num_seen), (items, item_scores, keys)
    )
    return Buffer(data=data, num_seen=num_seen), scores
