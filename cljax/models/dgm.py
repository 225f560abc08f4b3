"""DGM's masked generator (`cljax.methods.dgm`): a class-conditional MLP gated per task.

The generator maps `[z; one_hot(y)]` through hidden layers of widths
`(hidden, 2 * hidden)` (grown after each task) to a sigmoid image. Task t's
mask embeddings `e_t` gate it with `m = sigmoid(s e_t)` (`cljax/core/masks.py`):
one mask entry per weight and bias (`weight_masks=True`, DGMw) or per hidden
unit (DGMa, as HAT). The params are plain pytrees, `layers = ({"kernel",
"bias"}, ...)`; the embeddings of every task live in a bank with a leading
axis of `max_tasks` (one task per class at most). `frozen_grads` is the rule
that keeps earlier tasks' weights fixed, `sparsity` the HAT regulariser, and
`grow` adds units to the hidden layers (host code, numpy).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cljax.core import masks as masks_lib


def dense_init(key, d_in, d_out):
    """A linear layer `{"kernel": He normal (d_in, d_out), "bias": zeros}`."""
    scale = math.sqrt(2.0 / d_in)
    return {"kernel": scale * jax.random.normal(key, (d_in, d_out)), "bias": jnp.zeros(d_out)}


SATURATION = 50.0  # the official code's clamp of s * e in the gradient compensation


def mask_fn(s):
    """Embeddings -> masks: soft at `s = (value, gradient scale)` (HAT's compensated gradient,
    clamped as the official code clamps it) or binary when `s` is None."""
    if s is None:
        return masks_lib.binary
    return lambda e: masks_lib.gate(e, *s, clamp=SATURATION)


def task_masks(emb, s=None):
    """One task's masks from its embeddings (soft at `s`, binary when `s` is None)."""
    return jax.tree.map(mask_fn(s), emb)


def row(bank, task):
    """Task `task`'s embeddings out of the bank."""
    return jax.tree.map(lambda e: e[task], bank)


class MaskedGenerator(NamedTuple):
    """The static shape of the generator: classes, noise size, initial widths, mask kind."""

    num_classes: int
    z_dim: int
    widths: tuple[int, ...]  # the hidden widths before any growth
    weight_masks: bool  # DGMw (per weight) or DGMa (per unit)

    @property
    def max_tasks(self) -> int:
        return self.num_classes  # at most one task per class: embeddings for every task exist

    def init_layers(self, key, image_size: int) -> tuple:
        sizes = (self.z_dim + self.num_classes, *self.widths, image_size)
        keys = jax.random.split(key, len(sizes) - 1)
        return tuple(
            dense_init(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
        )

    def new_embeddings(self, layers) -> tuple:
        """A bank of embeddings for `max_tasks` tasks, shaped for `layers`, all 0 (every mask
        at sigmoid(0) = 1/2 before training), as the official code initialises them."""
        n = self.max_tasks
        if self.weight_masks:
            return tuple(
                {
                    "kernel": jnp.zeros((n, *layer["kernel"].shape)),
                    "bias": jnp.zeros((n, *layer["bias"].shape)),
                }
                for layer in layers
            )
        return tuple(jnp.zeros((n, layer["bias"].shape[0])) for layer in layers[:-1])

    def generate(self, layers, emb, z, y, s=None, image_shape=None):
        """Images of classes `y` with one task's mask embeddings `emb` (soft masks at `s`,
        binary when `s` is None)."""
        mask = mask_fn(s)
        h = jnp.concatenate([z, jax.nn.one_hot(y, self.num_classes)], -1)
        for i, layer in enumerate(layers):
            if self.weight_masks:
                w = layer["kernel"] * mask(emb[i]["kernel"])
                b = layer["bias"] * mask(emb[i]["bias"])
            else:
                w, b = layer["kernel"], layer["bias"]
            h = h @ w + b
            if i < len(layers) - 1:
                h = jax.nn.relu(h)
                if not self.weight_masks:
                    h = h * mask(emb[i])
        return jax.nn.sigmoid(h).reshape((*z.shape[:-1], *image_shape))

    def generate_mixed(self, layers, bank, z, y, task_ids, image_shape):
        """Binary-mask generation where each sample's class may belong to another task."""
        out = jnp.zeros((z.shape[0], *image_shape))
        for t in range(self.max_tasks):
            pick = (task_ids == t).reshape((-1,) + (1,) * len(image_shape))
            out = out + pick * self.generate(layers, row(bank, t), z, y, None, image_shape)
        return out

    def mask_scale(self, step, per_epoch, epochs, s_max: float):
        """`(s, gradient scale)` at generator step `step`, as the official code anneals.

        Epoch k of E has the top value `s_k = 1/s_max + (s_max - 1/s_max) k / E`.
        DGMa holds `s_k` through the epoch; DGMw moves within it from `1/s_k`
        to `s_k` (for k = 0, where `s_0 < 1`, that runs from `s_max` down, as
        in the official code). The embeddings' gradient is HAT's compensation
        with `s_k` as its `s_max` (the official `s_g_max / s_g * num / den`).
        """
        epoch = jnp.minimum(step // per_epoch, epochs)
        top = masks_lib.anneal(epoch, epochs + 1, s_max)
        if not self.weight_masks:
            return top, top
        frac = (step % per_epoch) / per_epoch
        return 1.0 / top + (top - 1.0 / top) * frac, top

    def replay_chunks(self, key, layers, bank, old, task_of_class, n, b, shape):
        """`n` chunks of `b` images of the classes `old` ((C,) bool), each chunk from one old
        task (binary masks; no gradient)."""
        k_task, k_y, k_z = jax.random.split(key, 3)
        uniform = lambda mask: jnp.where(mask.any(), jnp.where(mask, 0.0, -jnp.inf), 0.0)
        tasks = task_of_class[jax.random.categorical(k_task, uniform(old), shape=(n,))]
        in_task = old[None] & (task_of_class[None] == tasks[:, None])  # (n, C)
        y = jax.random.categorical(k_y, jax.vmap(uniform)(in_task)[:, None], shape=(n, b))
        z = jax.random.normal(k_z, (n, b, self.z_dim))
        fn = lambda zz, yy, tt: self.generate(layers, row(bank, tt), zz, yy, None, shape)
        return jax.lax.stop_gradient(jax.vmap(fn)(z, y, tasks)), y

    def replay_batch(self, key, layers, bank, old, task_of_class, n, shape):
        """`n` images of the classes `old`, in parts of n/4 each from one old task, so one
        batch sees several."""
        k = 4 if n % 4 == 0 else 1
        rep_x, rep_y = self.replay_chunks(key, layers, bank, old, task_of_class, k, n // k, shape)
        return rep_x.reshape((n, *shape)), rep_y.reshape(n)

    def frozen_grads(self, grads, used, outputs_used):
        """`grads` with the weights that earlier tasks' masks use zeroed."""
        layers = grads["layers"]
        if self.weight_masks:
            new = tuple(
                {k: g[k] * (1.0 - u[k]) for k in ("kernel", "bias")}
                for g, u in zip(layers, used, strict=True)
            )
        else:  # HAT: weight (i -> j) frozen when both its input and output units are in use
            # Inputs count as always in use, image pixels once a task has finished.
            units = (None, *used, None)
            new = []
            for i, g in enumerate(layers):
                a_in = 1.0 if units[i] is None else units[i][:, None]
                a_out = outputs_used if units[i + 1] is None else units[i + 1]
                new.append(
                    {
                        "kernel": g["kernel"] * (1.0 - jnp.minimum(a_in, a_out)),
                        "bias": g["bias"] * (1.0 - jnp.broadcast_to(a_out, g["bias"].shape)),
                    }
                )
            new = tuple(new)
        return {**grads, "layers": new}


def sparsity(emb, used, s):
    """HAT's regulariser: the current masks' share of the capacity still free (all layers pooled)."""
    soft = task_masks(emb, s)
    pairs = zip(jax.tree.leaves(soft), jax.tree.leaves(used), strict=True)
    taken = sum(jnp.sum(m * (1 - u)) for m, u in pairs)
    free = sum(jnp.sum(1 - u) for u in jax.tree.leaves(used))
    return taken / jnp.maximum(free, 1.0)


def grow(gen: MaskedGenerator, layers, bank, used, grown, finished: int):
    """`(layers, bank, used)` with `grown[l]` units added to hidden layer l (numpy, host code).

    New weights are He-normal draws; new units' embeddings are off (-90, the
    official code's value) for tasks 0..`finished` (they stay out of every finished
    task's network) and 0 for the tasks to come; `used` marks them free. The draws
    are seeded by the task and the current weights, so a resumed run grows
    identically.
    """
    layers = [dict(layer) for layer in jax.tree.map(np.asarray, layers)]
    emb = list(jax.tree.map(np.asarray, bank))
    used = list(jax.tree.map(np.asarray, used))
    rng = np.random.default_rng([finished, int(np.sum(layers[0]["kernel"][:3]) * 1e6) % 2**31])
    off = -90.0
    n = gen.max_tasks

    def fresh(shape):
        e = np.zeros(shape, np.float32)
        e[: finished + 1] = off
        return e

    for i, g in enumerate(np.asarray(grown).tolist()):
        if g <= 0:
            continue
        d_in = layers[i]["kernel"].shape[0]
        d_next = layers[i + 1]["kernel"].shape[1]
        cols = rng.normal(0, math.sqrt(2.0 / d_in), (d_in, g)).astype(np.float32)
        rows = rng.normal(0, math.sqrt(2.0 / (layers[i + 1]["kernel"].shape[0] + g)), (g, d_next))
        layers[i] = {
            "kernel": np.concatenate([layers[i]["kernel"], cols], 1),
            "bias": np.concatenate([layers[i]["bias"], np.zeros(g, np.float32)]),
        }
        layers[i + 1] = {
            "kernel": np.concatenate([layers[i + 1]["kernel"], rows.astype(np.float32)], 0),
            "bias": layers[i + 1]["bias"],
        }
        if gen.weight_masks:
            emb[i] = {
                "kernel": np.concatenate([emb[i]["kernel"], fresh((n, d_in, g))], 2),
                "bias": np.concatenate([emb[i]["bias"], fresh((n, g))], 1),
            }
            emb[i + 1] = {
                "kernel": np.concatenate([emb[i + 1]["kernel"], fresh((n, g, d_next))], 1),
                "bias": emb[i + 1]["bias"],
            }
            used[i] = {
                "kernel": np.concatenate([used[i]["kernel"], np.zeros((d_in, g), np.float32)], 1),
                "bias": np.concatenate([used[i]["bias"], np.zeros(g, np.float32)]),
            }
            used[i + 1] = {
                "kernel": np.concatenate(
                    [used[i + 1]["kernel"], np.zeros((g, d_next), np.float32)], 0
                ),
                "bias": used[i + 1]["bias"],
            }
        else:
            emb[i] = np.concatenate([emb[i], fresh((n, g))], 1)
            used[i] = np.concatenate([used[i], np.zeros(g, np.float32)])
    as_jax = lambda tree: jax.tree.map(jnp.asarray, tuple(tree))
    return as_jax(layers), as_jax(emb), as_jax(used)
