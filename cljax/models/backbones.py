"""Backbones: Mammoth's MNIST MLP, a small CNN and the reduced ResNet-18 for 32x32 inputs.

Every model is a Linen module called as `model.apply(variables, x, train=...)`.
Models with BatchNorm keep running statistics in the `batch_stats` collection.
With `num_classes=None` a model returns its features (the input of its last
layer): `dyn_expand` stacks such feature extractors. The ResNet's convolutions are
`cljax.models.conv.Conv` (flax's variables; im2col matmuls on a CPU, where `lax.conv`
inside the compiled task's loop is 50-150x slower, `lax.conv` elsewhere).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cljax.models.conv import Conv

_xavier = nn.initializers.xavier_uniform()


class MLP(nn.Module):
    """Fully connected ReLU network (Mammoth's MNISTMLP is `MLP((100, 100), 10)`, van de
    Ven's split-MNIST classifier `MLP((400, 400), 10, weight_init="torch")`).

    `weight_init` "xavier": Xavier-uniform weights and zero biases (Mammoth's `xavier` on its
    MLP); "torch": PyTorch's `nn.Linear` defaults, weights and biases U(+-1/sqrt(fan_in))."""

    hidden: Sequence[int] = (100, 100)
    num_classes: int | None = 10
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32
    weight_init: str = "xavier"

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = x.reshape((x.shape[0], -1))
        if self.weight_init not in ("xavier", "torch"):
            raise ValueError(f"MLP weight_init must be xavier or torch, got {self.weight_init!r}")
        torch_init = self.weight_init == "torch"
        widths = [*self.hidden, *([] if self.num_classes is None else [self.num_classes])]
        for i, width in enumerate(widths):
            if torch_init:
                x = TorchDense(width, dtype=self.dtype)(x)
            else:
                x = nn.Dense(width, kernel_init=_xavier, dtype=self.dtype)(x)
            if i < len(self.hidden):
                x = nn.relu(x)
        return x.astype(jnp.float32)


def takes_mask(module: nn.Module) -> bool:
    """Whether `module`'s `__call__` takes `mask` (the weight-0 padding kept out of its
    BatchNorm's batch statistics: `ResNet18`, `CosineHead`)."""
    return "mask" in inspect.signature(type(module).__call__).parameters


class Conv3x3(nn.Module):
    """3x3 convolution (padding 1) as nine shifted slices and one matmul.

    Same parameters as `nn.Conv(features, (3, 3), stride, padding=1)`. On CPU,
    XLA runs `lax.conv` inside a `while` loop (our scanned task) ~40x slower than
    outside it (jax-ml/jax#12868); slices and a matmul stay fast there.
    """

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        s, (h, w) = self.stride, x.shape[1:3]
        ho, wo = -(-h // s), -(-w // s)
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).astype(self.dtype)
        cols = [
            xp[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
            for i in range(3)
            for j in range(3)
        ]
        out = jnp.concatenate(cols, -1) @ kernel.reshape(9 * c, -1).astype(self.dtype)
        return out + bias.astype(self.dtype)


class ConvNet(nn.Module):
    """3x3 conv + ReLU layers (stride 2 after the first), global average pool, linear head.

    Strided convs instead of max-pooling: XLA's CPU backward of max-pool
    (select-and-scatter) made the net ~10x slower to train.

    `masks[i]` (one value per channel of conv i, broadcast over the batch)
    multiplies that conv's activations: the channel masks of `dyn_expand`.
    Dropping a channel whose mask is 0 (`resize` in `cljax.methods.dyn_expand`) gives
    a narrower `ConvNet` with the same outputs.
    """

    widths: Sequence[int] = (32, 64, 128)
    num_classes: int | None = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, masks=None):
        del train
        if x.ndim == 3:  # (N, H, W) grey images
            x = x[..., None]
        for i, width in enumerate(self.widths):
            stride = 1 if i == 0 else 2
            x = nn.relu(Conv3x3(width, stride, self.dtype, name=f"conv{i}")(x))
            if masks is not None:
                x = x * masks[i].astype(x.dtype)
        x = jnp.mean(x, axis=(1, 2))
        if self.num_classes is None:
            return x.astype(jnp.float32)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


# PyTorch's default initialisation (`reset_parameters` of nn.Conv2d and nn.Linear,
# kaiming_uniform(a=sqrt(5))): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in x kh x kw.
# The reference runs (Mammoth's ResNet-18) start from it.
_torch_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias(fan_in: int):
    """nn.Linear's bias initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / max(fan_in, 1) ** 0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


class TorchDense(nn.Module):
    """`nn.Dense` initialised as PyTorch's `nn.Linear`: weights and bias U(+-1/sqrt(fan_in))."""

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dense = nn.Dense(
            self.features,
            use_bias=self.use_bias,
            kernel_init=_torch_kernel,
            bias_init=_torch_bias(x.shape[-1]),
            dtype=self.dtype,
            name="dense",
        )
        return dense(x)


class BatchNorm(nn.Module):
    """BatchNorm over all axes but the last, as PyTorch's `nn.BatchNorm2d` (momentum 0.1,
    eps 1e-5): normalises by the biased batch variance, but the running variance follows
    the *unbiased* one (n / (n - 1) times it), where `nn.BatchNorm` keeps the biased one.

    Same variables as `nn.BatchNorm` (params `scale`, `bias`; batch_stats `mean`, `var`);
    statistics in float32 (two-pass variance), the output in `dtype`. `mask` (`(N,)`
    booleans, training only): the batch statistics are those of the items it marks, as if
    the others were not in the batch (a replay method's padding slots, which PyTorch's
    reference never forwards), or every item's where it marks none; every item is
    normalised by them.
    """

    momentum: float = 0.9  # weight of the old running statistics (PyTorch's 1 - momentum)
    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        shape = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, shape, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, shape, jnp.float32)
        scale = self.param("scale", nn.initializers.ones, shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, shape, jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.promote_types(self.dtype, jnp.float32))
            if mask is None:
                mean = xf.mean(axes)
                var = jnp.square(xf - mean).mean(axes)
                n = x.size // shape[0]
            else:  # the marked items' statistics (every item's where none is marked)
                w = mask.reshape((-1,) + (1,) * (x.ndim - 1)).astype(xf.dtype)
                w = jnp.where(w.sum() > 0, w, jnp.ones_like(w))
                n = w.sum() * (x.size // (x.shape[0] * shape[0]))
                mean = (xf * w).sum(axes) / n
                var = (jnp.square(xf - mean) * w).sum(axes) / n
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * mean
                ra_var.value = m * ra_var.value + (1 - m) * var * (n / jnp.maximum(n - 1, 1))
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        return y.astype(self.dtype)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with a 1x1 projection shortcut when needed."""

    planes: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        norm = lambda: BatchNorm(dtype=self.dtype)
        conv = lambda planes, k, stride, pad: Conv(
            planes,
            (k, k),
            stride,
            padding=pad,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=_torch_kernel,
        )
        out = nn.relu(norm()(conv(self.planes, 3, self.stride, 1)(x), train, mask))
        out = norm()(conv(self.planes, 3, 1, 1)(out), train, mask)
        if self.stride != 1 or x.shape[-1] != self.planes:
            x = norm()(conv(self.planes, 1, self.stride, 0)(x), train, mask)
        return nn.relu(out + x)


class ResNet18(nn.Module):
    """Reduced ResNet-18 for 32x32 inputs (3x3 stem, no max-pool), as in GEM and Mammoth.

    Equal to Mammoth's `resnet18(num_classes, nf)` in PyTorch, its initialisation and
    BatchNorm (`BatchNorm`) included (`tests/test_torch_equivalence.py`).
    """

    num_classes: int | None = 10
    nf: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        """Logits (features with `num_classes=None`); `mask`: see `BatchNorm`."""
        x = Conv(
            self.nf,
            (3, 3),
            1,
            padding=1,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=_torch_kernel,
        )(x)
        x = nn.relu(BatchNorm(dtype=self.dtype)(x, train, mask))
        for i, mult in enumerate((1, 2, 4, 8)):
            for b in range(2):
                stride = 2 if (i > 0 and b == 0) else 1
                x = BasicBlock(self.nf * mult, stride, self.dtype)(x, train, mask)
        x = jnp.mean(x, axis=(1, 2))
        if self.num_classes is None:
            return x.astype(jnp.float32)
        head = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            kernel_init=_torch_kernel,
            bias_init=_torch_bias(x.shape[-1]),
        )
        return head(x).astype(jnp.float32)


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make(name: str, num_classes: int, dtype: str = "float32", nf: int = 64) -> nn.Module:
    """Builds a backbone by name (`mlp`, `mlp-400`, `mlp-1000`, `cnn`, `cnn-wide` or `resnet18`) computing
    in `dtype`.

    `cnn-wide` is `cnn` with twice the channels (64-128-256), four times the
    parameters: a backbone with room to prune (dyn_expand's pruning study).

    `bfloat16` is mixed precision: bf16 activations and matmuls, float32
    parameters, optimizer state and logits.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; choose one of: {', '.join(DTYPES)}")
    if name == "mlp":
        return MLP((100, 100), num_classes, DTYPES[dtype])
    if name == "mlp-400":  # van de Ven et al.'s split-MNIST classifier (fc_units 400)
        return MLP((400, 400), num_classes, DTYPES[dtype], weight_init="torch")
    if name == "mlp-1000":  # and their permuted-MNIST one (fc_units 1000)
        return MLP((1000, 1000), num_classes, DTYPES[dtype], weight_init="torch")
    if name == "cnn":
        return ConvNet((32, 64, 128), num_classes, DTYPES[dtype])
    if name == "cnn-wide":
        return ConvNet((64, 128, 256), num_classes, DTYPES[dtype])
    if name == "resnet18":
        return ResNet18(num_classes, nf, DTYPES[dtype])
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")


MODELS = ("mlp", "mlp-400", "mlp-1000", "cnn", "cnn-wide", "resnet18")
