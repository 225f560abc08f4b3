"""`Conv` and `ConvTranspose`: flax's layers, computed as im2col matmuls on CPU.

On XLA:CPU, `lax.conv` inside a `while` loop (our scanned task) runs its kernel gradient
40-70x slower than the same op outside one, its input gradient 3-5x (jax-ml/jax#12868),
and a transposed convolution's kernel gradient is slow even outside one. These modules
take the arguments of flax's `nn.Conv` / `nn.ConvTranspose`, make the same parameters
("kernel" HWIO and "bias": same shapes, initialisers and auto-names `Conv_0`,
`ConvTranspose_0`, so variables are interchangeable) and compute the same function:
with `impl="lax"` through flax's own `lax` call, with `impl="im2col"` as strided slices of
the padded input, concatenated along channels, times the kernel in one matmul (per output
phase, below). `impl="auto"` picks im2col when JAX's default backend is the CPU and
`lax.conv` elsewhere (on GPU/TPU it is fast inside loops), unless `$CLJAX_CONV_IMPL`
names one (the test suite runs `lax`: at XLA's lowest optimisation level, the tests', the
im2col form's many slices compile slower); the choice is made when the module is traced, so a program placed on a non-default platform should name its `impl`.
The im2col form is rematerialised: its backward pass keeps the input, as `lax.conv`'s
does, not the patches (kernel-size times larger), and rebuilds them.

A transposed convolution is a convolution of the input dilated by the stride. The
im2col form skips the zeros: the outputs of one phase (position mod stride) meet only
the kernel taps of that phase, so each phase is a stride-1 im2col convolution of the
undilated input with a sub-kernel, and the phases are interleaved (the sub-pixel form:
a quarter of the dilated form's work at stride 2).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding, default_kernel_init
from jax import lax

IMPLS = ("auto", "im2col", "lax")


ENV_VAR = "CLJAX_CONV_IMPL"


def resolve_impl(impl: str) -> str:
    """`"im2col"` or `"lax"`: `impl` itself, or for `"auto"` `$CLJAX_CONV_IMPL` where set,
    else im2col on a CPU backend."""
    if impl == "auto" and os.environ.get(ENV_VAR):
        impl = os.environ[ENV_VAR]
        if impl not in IMPLS[1:]:
            raise ValueError(f"${ENV_VAR}={impl!r}: choose im2col or lax")
    if impl not in IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; choose one of: {', '.join(IMPLS)}")
    if impl == "auto":
        return "im2col" if jax.default_backend() == "cpu" else "lax"
    return impl


class _Axis(NamedTuple):
    """How one spatial axis is computed: `phases[r]` lists the taps `(tap, offset)` that
    output `q * dil_in + r` reads at input `q * stride + offset`; `pad` makes every read
    an in-bounds slice of the padded input (negative: crops)."""

    out: int  # output length
    per_phase: int  # outputs per phase (the phases cover at least `out`)
    pad: tuple[int, int]
    phases: tuple[tuple[tuple[int, int], ...], ...]


def _axis(n: int, k: int, stride: int, pad: tuple[int, int], dil_in: int, dil_k: int) -> _Axis:
    lo, hi = pad
    out = ((n - 1) * dil_in + 1 + lo + hi - (k - 1) * dil_k - 1) // stride + 1
    if out <= 0:
        raise ValueError(f"the convolution's output is empty (input {n}, kernel {k}, pad {pad})")
    per_phase = -(-out // dil_in)
    # dilated input position m = o * stride + t * dil_k - lo holds x[m / dil_in] when divisible
    phases = tuple(
        tuple(
            (t, (r + t * dil_k - lo) // dil_in)
            for t in range(k)
            if (r + t * dil_k - lo) % dil_in == 0
        )
        for r in range(dil_in)
    )
    offsets = [d for taps in phases for _, d in taps]
    left = -min(offsets)
    right = max(offsets) + stride * (per_phase - 1) + 1 - n
    return _Axis(out, per_phase, (left, right), phases)


def _phase(x, kernel, axes, taps, strides, precision, preferred):
    """One output phase: the im2col slices of `x` (padded) times the phase's sub-kernel."""
    n, c, f = x.shape[0], x.shape[-1], kernel.shape[-1]
    shape = (n, *(a.per_phase for a in axes), f)
    if not all(taps):  # a phase no tap reaches (stride > kernel): zeros
        return jnp.zeros(shape, preferred or jnp.result_type(x, kernel))
    cols = []
    for combo in itertools.product(*taps):
        start = [d + a.pad[0] for (_, d), a in zip(combo, axes, strict=True)]
        stop = [
            s + st * (a.per_phase - 1) + 1 for s, st, a in zip(start, strides, axes, strict=True)
        ]
        cols.append(lax.slice(x, (0, *start, 0), (n, *stop, c), (1, *strides, 1)))
    # the phase's taps are every step-th tap from the first: one strided slice of the kernel
    first = [t[0][0] for t in taps]
    step = [t[1][0] - t[0][0] if len(t) > 1 else 1 for t in taps]
    stop = [a + s * (len(t) - 1) + 1 for a, s, t in zip(first, step, taps, strict=True)]
    sub = lax.slice(kernel, (*first, 0, 0), (*stop, c, f), (*step, 1, 1))
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, -1)
    return jnp.matmul(
        patches, sub.reshape(-1, f), precision=precision, preferred_element_type=preferred
    )


def conv_im2col(
    x,
    kernel,
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
    precision=None,
    preferred_element_type=None,
):
    """`lax.conv_general_dilated` (channels-last input with one batch axis, HWIO kernel,
    explicit padding, one feature group) as strided slices and matmuls."""
    strides, lhs_dilation = list(strides), list(lhs_dilation)
    both = [s > 1 and d > 1 for s, d in zip(strides, lhs_dilation, strict=True)]
    if any(both):  # strided and input-dilated (no layer of ours): dilate that axis in memory
        interior = [d - 1 if b else 0 for d, b in zip(lhs_dilation, both, strict=True)]
        x = lax.pad(
            x, jnp.zeros((), x.dtype), [(0, 0, 0), *((0, 0, i) for i in interior), (0, 0, 0)]
        )
        lhs_dilation = [1 if b else d for d, b in zip(lhs_dilation, both, strict=True)]
    axes = [
        _axis(n, k, s, tuple(p), d, r)
        for n, k, s, p, d, r in zip(
            x.shape[1:-1],
            kernel.shape[:-2],
            strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            strict=True,
        )
    ]
    # rematerialised: the backward pass keeps x (as lax.conv keeps its input) and rebuilds
    # the patches, which are kernel-size times larger, from it

    def apply(x, kernel):
        return _apply(x, kernel, axes, strides, lhs_dilation, precision, preferred_element_type)

    return jax.checkpoint(apply)(x, kernel)


def _apply(x, kernel, axes, strides, lhs_dilation, precision, preferred):
    """`conv_im2col` once planned: pad, one im2col matmul per phase, interleave the phases."""
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((*a.pad, 0) for a in axes), (0, 0, 0)])
    outs = [
        _phase(x, kernel, axes, taps, strides, precision, preferred)
        for taps in itertools.product(*(a.phases for a in axes))
    ]
    if len(outs) == 1:
        return outs[0]
    # interleave: (phases..., N, q..., F) -> (N, q0, phase0, q1, phase1, ..., F), then crop
    nd = len(axes)
    y = jnp.stack(outs).reshape((*lhs_dilation, *outs[0].shape))
    y = y.transpose((nd, *itertools.chain(*((nd + 1 + i, i) for i in range(nd))), 2 * nd + 1))
    y = y.reshape(
        (y.shape[0], *(a.per_phase * d for a, d in zip(axes, lhs_dilation, strict=True)), -1)
    )
    return y[(slice(None), *(slice(a.out) for a in axes))]


def _transpose_pads(k: int, s: int, padding: str) -> tuple[int, int]:
    """`lax.conv_transpose`'s padding of the dilated input for 'SAME' / 'VALID'."""
    if padding == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else int(np.ceil(total / 2))
    else:
        total = k + s - 2 + max(k - s, 0)
        lo = k - 1
    return lo, total - lo


def _ints(value, n: int) -> tuple[int, ...]:
    """flax's broadcast of an int (or None, meaning 1) to `n` spatial dims."""
    value = 1 if value is None else value
    return (value,) * n if isinstance(value, int) else tuple(value)


def _pads(padding, n: int):
    """flax's canonical padding: 'SAME', 'VALID' or `n` (low, high) pairs."""
    pads = canonicalize_padding(padding, n)
    if isinstance(pads, str) and pads not in ("SAME", "VALID"):
        raise NotImplementedError(f"padding {pads!r}: use flax.linen's layer")
    return pads


class _Layer(nn.Module):
    """What `Conv` and `ConvTranspose` share: their parameters, batch axes and bias."""

    def _prepare(self, inputs, kernel_in_out):
        """Flattens batch axes; makes kernel (shape `kernel_size + kernel_in_out`) and bias."""
        ks = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
        batch = inputs.shape[: inputs.ndim - len(ks) - 1]
        x = inputs if len(batch) == 1 else inputs.reshape((-1, *inputs.shape[len(batch) :]))
        shape = ks + kernel_in_out(x.shape[-1])
        if self.mask is not None and self.mask.shape != shape:
            raise ValueError(f"mask shape {self.mask.shape} differs from the kernel's {shape}")
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        if self.mask is not None:
            kernel *= self.mask
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return x, kernel, bias, batch

    @staticmethod
    def _finish(y, bias, batch):
        if bias is not None:
            y += bias.reshape((1,) * (y.ndim - 1) + bias.shape)
        return y if len(batch) == 1 else y.reshape(batch + y.shape[1:])


class Conv(_Layer):
    """`flax.linen.Conv` (same attributes, parameters and values), computed by `impl`:
    im2col on CPU, `lax.conv` elsewhere, or the one named. Padding is 'SAME', 'VALID',
    an int or (low, high) pairs; im2col takes one feature group."""

    features: int
    kernel_size: int | Sequence[int]
    strides: None | int | Sequence[int] = 1
    padding: Any = "SAME"
    input_dilation: None | int | Sequence[int] = 1
    kernel_dilation: None | int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    mask: Any = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Any = default_kernel_init
    bias_init: Any = nn.initializers.zeros_init()
    impl: str = "auto"

    @nn.compact
    def __call__(self, inputs):
        groups = self.feature_group_count
        x, kernel, bias, batch = self._prepare(inputs, lambda c: (c // groups, self.features))
        nd = kernel.ndim - 2
        strides, dil_in, dil_k = (
            _ints(v, nd) for v in (self.strides, self.input_dilation, self.kernel_dilation)
        )
        pads = _pads(self.padding, nd)
        if resolve_impl(self.impl) == "lax":
            spec = (0, nd + 1, *range(1, nd + 1))
            dn = lax.ConvDimensionNumbers(spec, (nd + 1, nd, *range(nd)), spec)
            y = lax.conv_general_dilated(
                x, kernel, strides, pads, dil_in, dil_k, dn, groups, precision=self.precision
            )
            return self._finish(y, bias, batch)
        if groups != 1:
            raise NotImplementedError("im2col takes one feature group; use impl='lax'")
        if isinstance(pads, str):
            if any(d != 1 for d in dil_in):
                raise ValueError("string padding with input dilation: give explicit pads")
            k_eff = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:nd], dil_k, strict=True)]
            pads = lax.padtype_to_pads(x.shape[1:-1], k_eff, strides, pads)
        y = conv_im2col(x, kernel, strides, pads, dil_in, dil_k, self.precision)
        return self._finish(y, bias, batch)


class ConvTranspose(_Layer):
    """`flax.linen.ConvTranspose` (same attributes, parameters and values: `lax.conv_transpose`'s
    padding, kernel not flipped unless `transpose_kernel`), computed by `impl`: im2col on
    CPU, `lax.conv_transpose` elsewhere, or the one named. Padding 'CIRCULAR' is not taken."""

    features: int
    kernel_size: int | Sequence[int]
    strides: Sequence[int] | None = None
    padding: Any = "SAME"
    kernel_dilation: Sequence[int] | None = None
    use_bias: bool = True
    mask: Any = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Any = default_kernel_init
    bias_init: Any = nn.initializers.zeros_init()
    transpose_kernel: bool = False
    preferred_element_type: Any = None
    impl: str = "auto"

    @nn.compact
    def __call__(self, inputs):
        io = lambda c: (self.features, c) if self.transpose_kernel else (c, self.features)
        x, kernel, bias, batch = self._prepare(inputs, io)
        nd = kernel.ndim - 2
        strides, dil_k = _ints(self.strides, nd), _ints(self.kernel_dilation, nd)
        pads = _pads(self.padding, nd)
        if resolve_impl(self.impl) == "lax":
            y = lax.conv_transpose(
                x,
                kernel,
                strides,
                pads,
                rhs_dilation=dil_k,
                transpose_kernel=self.transpose_kernel,
                precision=self.precision,
                preferred_element_type=self.preferred_element_type,
            )
            return self._finish(y, bias, batch)
        if isinstance(pads, str):
            k_eff = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:nd], dil_k, strict=True)]
            pads = [_transpose_pads(k, s, pads) for k, s in zip(k_eff, strides, strict=True)]
        if self.transpose_kernel:
            kernel = jnp.flip(kernel, tuple(range(nd))).swapaxes(nd, nd + 1)
        y = conv_im2col(
            x, kernel, (1,) * nd, pads, strides, dil_k, self.precision, self.preferred_element_type
        )
        return self._finish(y, bias, batch)
