"""The `Scenario` type (a benchmark as a sequence of tasks) and the pixel maps through which
domain-incremental tasks and streams show their images (a module below `cljax.benchmarks.scenarios`,
which builds the benchmarks, and `cljax.benchmarks.streams`, which builds streams)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A benchmark: `num_tasks` tasks, their data, how to feed them and how to score them."""

    name: str
    num_tasks: int
    num_classes: int
    settings: tuple[str, ...]
    model: str
    input_fn: Callable
    train: Callable[[int], tuple[np.ndarray, np.ndarray]]
    test: Callable[[int], tuple[np.ndarray, np.ndarray]]
    classes: Callable[[int], tuple[int, ...]]
    train_sizes: tuple[int, ...]
    # Domain-IL benchmarks whose transforms are drawn per run seed (perm-mnist, rot-mnist):
    # `seed_maps(seed)` gives every task's pixel map `(src, keep)`, each `(T, P)`, for run
    # seed `seed`, and `raw(split)` the untransformed `(x, y)` of "train" or "test". The
    # driver trains and evaluates every seed through its own maps (`apply_maps`) in one
    # compiled program; `train(t)` and `test(t)` are the data as the scenario's own seed
    # draws it, for code that reads one scenario directly.
    seed_maps: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None
    raw: Callable[[str], tuple[np.ndarray, np.ndarray]] | None = None
    # A stream without task boundaries (`cljax.benchmarks.streams`; one task, setting "general"):
    # `stream(seed, batch_size) -> (items, angles)`, the training items of run seed `seed` in
    # stream order (indices into `train(0)`) and each one's rotation in degrees (or None)
    stream: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]] | None = None
    # `stream_batches(batch_size)`: the items of each of the stream's batches in order, where
    # they are not all `batch_size` (MNIST-360's shorter batch at each pair's end), the same
    # for every seed; None: a batch every `batch_size` items
    stream_batches: Callable[[int], np.ndarray] | None = None

    @property
    def single_setting(self) -> str | None:
        """The one setting of a benchmark scored over every class seen, with one head
        (domain-IL, a stream's "general"), whose accuracy is the class-IL evaluation's; None
        for class-incremental benchmarks (class-IL and task-IL)."""
        return self.settings[0] if self.settings in (("domain-il",), ("general",)) else None


# ---------------------------------------------------------------- pixel maps


def apply_maps(x, src, keep):
    """Images `x` (B, ...) through pixel maps: output pixel j of item i is input pixel
    `src[i, j]`, or 0 where `keep[i, j]` is False; `src`, `keep` are `(B, P)` or one `(P,)`
    map for every item. numpy or jax arrays (inside `jit` it is one gather)."""
    xp = jnp if isinstance(x, jax.Array) or isinstance(src, jax.Array) else np
    flat = x.reshape(x.shape[0], -1)
    if src.ndim == 1:
        out = flat[:, src] * keep.astype(x.dtype)
    else:
        out = xp.take_along_axis(flat, src, axis=1) * keep.astype(x.dtype)
    return out.reshape(x.shape)


def permutation_map(rng: np.random.Generator, shape):
    """`(src, keep)` of one random pixel permutation."""
    size = int(np.prod(shape))
    return rng.permutation(size).astype(np.int32), np.ones(size, bool)


def permutation(rng: np.random.Generator, shape):
    """A transform that applies one fixed random pixel permutation."""
    src, keep = permutation_map(rng, shape)
    return lambda x: apply_maps(x, src, keep)


def rotation(angle_deg: float, shape):
    """A transform rotating images by `angle_deg` about their centre (nearest neighbour,
    zero fill, counter-clockwise, as torchvision's default `rotate`)."""
    src, keep = rotation_map(angle_deg, shape)
    return lambda x: apply_maps(x, src, keep)


def rotation_map(angle_deg, shape, xp=np):
    """`(src, keep)` of `rotation`: `(P,)` each for one angle, `(B, P)` for an array of `B`
    angles. `xp=jnp` computes them inside `jit` (in the angles' float32; numpy's in float64)."""
    h, w = shape
    theta = xp.deg2rad(xp.asarray(angle_deg))[..., None, None]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = xp.mgrid[0:h, 0:w]
    # Inverse map: the source pixel of each output pixel.
    sx = xp.cos(theta) * (xx - cx) - xp.sin(theta) * (yy - cy) + cx
    sy = xp.sin(theta) * (xx - cx) + xp.cos(theta) * (yy - cy) + cy
    sx, sy = xp.rint(sx).astype(xp.int32), xp.rint(sy).astype(xp.int32)
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    flat = (*inside.shape[:-2], h * w)
    src = xp.where(inside, sy * w + sx, 0).reshape(flat).astype(xp.int32)
    return src, inside.reshape(flat)


def domain_maps(name: str, seed: int, num_tasks: int, shape):
    """Every task's pixel map of perm-mnist or rot-mnist as seed `seed` draws them:
    `(src, keep)`, each `(num_tasks, P)`."""
    rng = np.random.default_rng(seed)
    if name == "perm-mnist":
        maps = [permutation_map(rng, shape) for _ in range(num_tasks)]
    else:
        maps = [rotation_map(rng.uniform(0, 180), shape) for _ in range(num_tasks)]
    return np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps])
