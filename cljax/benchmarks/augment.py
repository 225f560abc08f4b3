"""The strong (SimCLR-style) augmentation X-DER's consistency loss draws its views from, as
Mammoth's `utils/augmentations.py:strong_aug` (tpami2023 ad4d390 and e75a491): a random
horizontal flip, torchvision's `RandomResizedCrop(size, scale=(0.2, 1))` (bilinear),
`RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)` (the four adjustments in a random
order), a random grayscale (p 0.2); the caller normalises.

Images are floats in [0, 1], `(N, H, W)` (one channel) or `(N, H, W, C)`. On one channel
saturation, hue and grayscale are the identity, as torchvision's on a PIL 'L' image.
Deviation: Mammoth goes through 8-bit PIL images between the steps (each rounds to 1/255);
here every step is in float.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

GRAY = (0.299, 0.587, 0.114)


def crop_params(key, height: int, width: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """`(top, left, h, w)` of torchvision's `RandomResizedCrop.get_params`: ten tries of an
    area fraction in `scale` and a log-uniform aspect ratio in `ratio`, the first that fits;
    else the centre crop of the largest box within `ratio`."""
    k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
    area = height * width
    target = area * jax.random.uniform(k_area, (10,), minval=scale[0], maxval=scale[1])
    log_r = jax.random.uniform(k_ratio, (10,), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    aspect = jnp.exp(log_r)
    w = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(fits)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    found = jnp.any(fits)
    h = jnp.where(found, h[first], fh)
    w = jnp.where(found, w[first], fw)
    top = jnp.floor(jax.random.uniform(k_top) * (height - h + 1)).astype(jnp.int32)
    left = jnp.floor(jax.random.uniform(k_left) * (width - w + 1)).astype(jnp.int32)
    top = jnp.where(found, top, (height - fh) // 2)
    left = jnp.where(found, left, (width - fw) // 2)
    return top, left, h, w


def resized_crop(img, top, left, h, w):
    """The box `(top, left, h, w)` of `img` (`(H, W, C)`) resized bilinearly to `(H, W)`
    (half-pixel centres, edges clamped to the box: `F.interpolate(..., "bilinear",
    align_corners=False)` of the crop, PIL's bilinear when enlarging)."""
    height, width = img.shape[:2]

    def coords(n_out, start, n_in):
        pos = start + (jnp.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        pos = jnp.clip(pos, start, start + n_in - 1)
        lo = jnp.floor(pos).astype(jnp.int32)
        hi = jnp.minimum(lo + 1, start + n_in - 1)
        return lo, hi, pos - lo

    y0, y1, wy = coords(height, top, h)
    x0, x1, wx = coords(width, left, w)
    wy, wx = wy[:, None, None], wx[None, :, None]
    rows0, rows1 = img[y0], img[y1]
    top_row = rows0[:, x0] * (1 - wx) + rows0[:, x1] * wx
    bottom_row = rows1[:, x0] * (1 - wx) + rows1[:, x1] * wx
    return top_row * (1 - wy) + bottom_row * wy


def grayscale(img):
    """`(H, W, 1)` luma of an RGB image (torchvision's weights); a one-channel image as is."""
    if img.shape[-1] == 1:
        return img
    return jnp.sum(img * jnp.asarray(GRAY, img.dtype), axis=-1, keepdims=True)


def adjust_hue(img, shift):
    """Hue rotated by `shift` (a fraction of the circle) in HSV, as torchvision's tensor
    `adjust_hue`; one channel: unchanged."""
    if img.shape[-1] == 1:
        return img
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    maxc = jnp.max(img, axis=-1)
    minc = jnp.min(img, axis=-1)
    delta = maxc - minc
    safe = jnp.where(delta == 0, 1.0, delta)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = jnp.where(delta == 0, 0.0, (hue / 6.0) % 1.0)
    sat = jnp.where(maxc == 0, 0.0, delta / jnp.where(maxc == 0, 1.0, maxc))
    hue = (hue + shift) % 1.0
    i = jnp.floor(hue * 6.0)
    f = hue * 6.0 - i
    v = maxc
    p, q, t = v * (1 - sat), v * (1 - sat * f), v * (1 - sat * (1 - f))
    i = i.astype(jnp.int32) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = [jnp.select([i == k for k in range(6)], [c[ch] for c in choices]) for ch in range(3)]
    return jnp.stack(out, axis=-1)


def color_jitter(img, key, strength=(0.4, 0.4, 0.4, 0.1)):
    """torchvision's `ColorJitter(brightness, contrast, saturation, hue)`: factors drawn
    uniformly (1 +- s, hue +- h), the four adjustments in a random order, each clipped to
    [0, 1]."""
    b, c, s, h = strength
    k_order, k_f = jax.random.split(key)
    lo = jnp.asarray([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h])
    hi = jnp.asarray([1 + b, 1 + c, 1 + s, h])
    factor = jax.random.uniform(k_f, (4,), minval=lo, maxval=hi)

    def blend(x, other, f):
        return jnp.clip(f * x + (1 - f) * other, 0.0, 1.0)

    ops = (
        lambda x: jnp.clip(x * factor[0], 0.0, 1.0),
        lambda x: blend(x, jnp.mean(grayscale(x)), factor[1]),
        lambda x: blend(x, grayscale(x), factor[2]),
        lambda x: adjust_hue(x, factor[3]),
    )

    order = jax.random.permutation(k_order, 4)

    def apply(i, x):
        return jax.lax.switch(order[i], ops, x)

    return jax.lax.fori_loop(0, 4, apply, img)


def strong_augment_one(img, key, scale=(0.2, 1.0), jitter_p=0.8, gray_p=0.2):
    """One view of one image `(H, W, C)` in [0, 1] (see the module's docstring)."""
    k_flip, k_crop, k_apply, k_jit, k_gray = jax.random.split(key, 5)
    img = jnp.where(jax.random.bernoulli(k_flip), img[:, ::-1], img)
    img = resized_crop(img, *crop_params(k_crop, *img.shape[:2], scale=scale))
    img = jnp.where(jax.random.bernoulli(k_apply, jitter_p), color_jitter(img, k_jit), img)
    gray = jnp.broadcast_to(grayscale(img), img.shape)
    return jnp.where(jax.random.bernoulli(k_gray, gray_p), gray, img)


def strong_augment(x, key, **options):
    """One view of each image of `x` (`(N, H, W)` or `(N, H, W, C)`, floats in [0, 1])."""
    flat = x.ndim == 3
    imgs = x[..., None] if flat else x
    out = jax.vmap(lambda img, k: strong_augment_one(img, k, **options))(
        imgs, jax.random.split(key, x.shape[0])
    )
    return out[..., 0] if flat else out
