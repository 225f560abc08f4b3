"""Generator / discriminator pairs for image inputs (DGR, MeRGAN, DGM's critic).

A small MLP pair (`mlp`; `mlp-wide` at twice its widths), a DCGAN-style conv
pair of ours (`dc`: two stride-2 (transposed) convolutions, so 28x28 and 32x32
inputs both work), and the MeRGAN authors' pair (`mergan-dc`: their
`network/gan32_model.py`, a DCGAN whose generator is conditioned only through
conditional BatchNorm). Generators take `(z, y)`; `y` (integer labels) is used
only when `num_classes > 0` (class-conditional: a one-hot concatenated to z, or
for `mergan-dc` a BatchNorm scale and offset per class).
Discriminators return `(adv, cls)`: the adversarial score and, when
`num_classes > 0`, the logits of an auxiliary classifier (AC-GAN).
`GanParts` holds one pair for one image shape with its apply and init helpers.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training import train_state

from cljax.models.conv import Conv, ConvTranspose


def _with_labels(z, y, num_classes):
    if num_classes <= 0:
        return z
    return jnp.concatenate([z, jax.nn.one_hot(y, num_classes, dtype=z.dtype)], axis=-1)


class MLPGenerator(nn.Module):
    """z (+ one-hot class) -> ReLU MLP -> sigmoid image of `image_shape`."""

    image_shape: Sequence[int]
    num_classes: int = 0
    hidden: Sequence[int] = (256, 512)

    @nn.compact
    def __call__(self, z, y=None):
        h = _with_labels(z, y, self.num_classes)
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        size = 1
        for d in self.image_shape:
            size *= d
        return nn.sigmoid(nn.Dense(size)(h)).reshape((z.shape[0], *self.image_shape))


class MLPDiscriminator(nn.Module):
    """image -> leaky-ReLU MLP -> (adversarial score, class logits or None)."""

    num_classes: int = 0
    hidden: Sequence[int] = (512, 256)

    @nn.compact
    def __call__(self, x):
        h = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            h = nn.leaky_relu(nn.Dense(width)(h), 0.2)
        adv = nn.Dense(1)(h)[:, 0]
        cls = nn.Dense(self.num_classes)(h) if self.num_classes > 0 else None
        return adv, cls


class DCGenerator(nn.Module):
    """DCGAN-style: z -> dense (H/4 x W/4 x 2ch) -> two stride-2 transposed convs -> sigmoid."""

    image_shape: Sequence[int]
    num_classes: int = 0
    ch: int = 64

    @nn.compact
    def __call__(self, z, y=None):
        h, w = self.image_shape[:2]
        c = self.image_shape[2] if len(self.image_shape) == 3 else 1
        x = nn.relu(nn.Dense(h // 4 * w // 4 * 2 * self.ch)(_with_labels(z, y, self.num_classes)))
        x = x.reshape((z.shape[0], h // 4, w // 4, 2 * self.ch))
        x = nn.relu(ConvTranspose(self.ch, (5, 5), (2, 2))(x))
        x = nn.sigmoid(ConvTranspose(c, (5, 5), (2, 2))(x))
        return x.reshape((z.shape[0], *self.image_shape))


class DCDiscriminator(nn.Module):
    """Two 5x5 stride-2 convs (leaky ReLU, no normalisation: WGAN-GP wants none) -> heads."""

    num_classes: int = 0
    ch: int = 64

    @nn.compact
    def __call__(self, x):
        if x.ndim == 3:
            x = x[..., None]
        x = nn.leaky_relu(Conv(self.ch, (5, 5), (2, 2))(x), 0.2)
        x = nn.leaky_relu(Conv(2 * self.ch, (5, 5), (2, 2))(x), 0.2)
        x = x.reshape((x.shape[0], -1))
        adv = nn.Dense(1)(x)[:, 0]
        cls = nn.Dense(self.num_classes)(x) if self.num_classes > 0 else None
        return adv, cls


class CondBatchNorm(nn.Module):
    """BatchNorm over (N, H, W) with the batch's statistics (always, as the authors' op) and a
    scale and offset per class label (Dumoulin et al. 2016); one pair without labels."""

    num_classes: int = 0

    @nn.compact
    def __call__(self, x, y=None):
        n = max(self.num_classes, 1)
        scale = self.param("scale", nn.initializers.ones, (n, x.shape[-1]))
        offset = self.param("offset", nn.initializers.zeros, (n, x.shape[-1]))
        labels = y if self.num_classes > 0 else jnp.zeros(x.shape[0], jnp.int32)
        mean = x.mean((0, 1, 2), keepdims=True)
        var = x.var((0, 1, 2), keepdims=True)
        norm = (x - mean) * jax.lax.rsqrt(var + 1e-5)
        return norm * scale[labels][:, None, None, :] + offset[labels][:, None, None, :]


def _padded_side(n: int) -> int:
    return -(-n // 8) * 8  # the authors' 32 for MNIST's 28 (they pad MNIST to 32x32)


class MerganGenerator(nn.Module):
    """The MeRGAN authors' generator (`gan32_model.Generator`, DIM_G 32): z -> dense to
    (S/8 x S/8 x 4 dim) -> [conditional BN, ReLU, 5x5 stride-2 transposed conv] x 3 -> tanh.
    The label enters only through the BatchNorm layers. Made at the side S (a multiple of
    8: 32 for MNIST, as the authors pad it) and centre-cropped to `image_shape`; the tanh
    output mapped to [0, 1] like the other generators."""

    image_shape: Sequence[int]
    num_classes: int = 0
    dim: int = 32

    @nn.compact
    def __call__(self, z, y=None):
        h, w = self.image_shape[:2]
        c = self.image_shape[2] if len(self.image_shape) == 3 else 1
        sh, sw = _padded_side(h), _padded_side(w)
        x = nn.Dense(sh // 8 * sw // 8 * 4 * self.dim)(z)
        x = x.reshape((z.shape[0], sh // 8, sw // 8, 4 * self.dim))
        for width in (2 * self.dim, self.dim, c):
            x = nn.relu(CondBatchNorm(self.num_classes)(x, y))
            x = ConvTranspose(width, (5, 5), (2, 2), padding="SAME")(x)
        x = (jnp.tanh(x) + 1.0) / 2.0
        top, left = (sh - h) // 2, (sw - w) // 2
        return x[:, top : top + h, left : left + w].reshape((z.shape[0], *self.image_shape))


class MerganDiscriminator(nn.Module):
    """The MeRGAN authors' critic (`gan32_model.Discriminator`, DIM_D 32): the image zero-padded
    to a side that is a multiple of 8, three 5x5 stride-2 convs (dim, 2 dim, 4 dim; leaky
    ReLU 0.2, no normalisation) -> adversarial score and AC-GAN class logits."""

    num_classes: int = 0
    dim: int = 32

    @nn.compact
    def __call__(self, x):
        if x.ndim == 3:
            x = x[..., None]
        ph, pw = _padded_side(x.shape[1]) - x.shape[1], _padded_side(x.shape[2]) - x.shape[2]
        x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        for width in (self.dim, 2 * self.dim, 4 * self.dim):
            x = nn.leaky_relu(Conv(width, (5, 5), (2, 2), padding="SAME")(x), 0.2)
        x = x.reshape((x.shape[0], -1))
        adv = nn.Dense(1)(x)[:, 0]
        cls = nn.Dense(self.num_classes)(x) if self.num_classes > 0 else None
        return adv, cls


# `mlp-wide`: the `mlp` pair at twice its widths (ours, for CPU budgets: ~3.4x the `mlp`'s
# time on 2 CPU cores, far below the `dc` pair's)
MLP_WIDTHS = {
    name: tuple(tuple(k * w for w in m.hidden) for m in (MLPGenerator, MLPDiscriminator))
    for name, k in (("mlp", 1), ("mlp-wide", 2))
}
ARCHS = (*MLP_WIDTHS, "dc", "mergan-dc")


def check_arch(arch: str):
    """A one-line error for an `arch` not in `ARCHS`."""
    if arch not in ARCHS:
        raise ValueError(f"unknown GAN architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def make_pair(arch: str, image_shape, num_classes: int = 0):
    """`(generator, discriminator)` modules: `arch` is one of `ARCHS`."""
    check_arch(arch)
    if arch in MLP_WIDTHS:
        g, d = MLP_WIDTHS[arch]
        return MLPGenerator(tuple(image_shape), num_classes, g), MLPDiscriminator(num_classes, d)
    if arch == "mergan-dc":
        return MerganGenerator(tuple(image_shape), num_classes), MerganDiscriminator(num_classes)
    if image_shape[0] % 4 or image_shape[1] % 4:
        raise ValueError(f"the dc GAN needs image sides divisible by 4, got {image_shape}")
    return DCGenerator(tuple(image_shape), num_classes), DCDiscriminator(num_classes)


class GanParts:
    """Generator and critic modules for one image shape, built once and reused."""

    def __init__(self, arch, image_shape, num_classes, z_dim):
        self.z_dim = z_dim
        self.g, self.d = make_pair(arch, image_shape, num_classes)
        self.g_apply = lambda params, z, y=None: self.g.apply({"params": params}, z, y)
        self.d_apply = lambda params, x: self.d.apply({"params": params}, x)

    def sample_z(self, key, n):
        """`n` latent codes, standard normal."""
        return jax.random.normal(key, (n, self.z_dim))

    def init_states(self, key, image, g_tx, d_tx):
        """`(generator, critic)` `TrainState`s for images shaped like `image` (1, ...)."""
        k_g, k_d = jax.random.split(key)
        z = jnp.zeros((1, self.z_dim))
        y = jnp.zeros((1,), jnp.int32)
        g_params = self.g.init(k_g, z, y)["params"]
        d_params = self.d.init(k_d, image)["params"]
        gen = train_state.TrainState.create(apply_fn=self.g_apply, params=g_params, tx=g_tx)
        disc = train_state.TrainState.create(apply_fn=self.d_apply, params=d_params, tx=d_tx)
        return gen, disc
