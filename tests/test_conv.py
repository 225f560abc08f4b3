"""`cljax.models.conv` against flax's `nn.Conv` / `nn.ConvTranspose`: the same parameters,
values and gradients (input, kernel, bias) for every convolution the models use, at tiny
channel counts and the models' spatial sizes, plus general arguments, bfloat16, `lax.scan` and
second-order gradients (WGAN-GP's penalty)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax.models import conv

# (name, transposed?, layer arguments, input NHWC): every conv of cljax/models at its
# spatial size (channels and batch shrunk); "28"/"32" are MNIST/CIFAR's image sides
MODEL_LAYERS = [
    # backbones.py ResNet18 / BasicBlock: 3x3 padding 1, 1x1 projection padding 0, no bias
    ("resnet stem 3x3 s1 3->4 @32", False, dict(features=4, kernel_size=(3, 3), strides=1, padding=1, use_bias=False), (2, 32, 32, 3)),
    ("resnet 3x3 s1 4->4 @8", False, dict(features=4, kernel_size=(3, 3), strides=1, padding=1, use_bias=False), (2, 8, 8, 4)),
    ("resnet 3x3 s2 4->8 @8", False, dict(features=8, kernel_size=(3, 3), strides=2, padding=1, use_bias=False), (2, 8, 8, 4)),
    ("resnet 1x1 s2 4->8 @8", False, dict(features=8, kernel_size=(1, 1), strides=2, padding=0, use_bias=False), (2, 8, 8, 4)),
    # gan.py DCDiscriminator (default padding SAME) on 28 and 32
    ("dc critic 5x5 s2 1->4 @28", False, dict(features=4, kernel_size=(5, 5), strides=(2, 2)), (2, 28, 28, 1)),
    ("dc critic 5x5 s2 4->8 @14", False, dict(features=8, kernel_size=(5, 5), strides=(2, 2)), (2, 14, 14, 4)),
    ("dc critic 5x5 s2 3->4 @32", False, dict(features=4, kernel_size=(5, 5), strides=(2, 2)), (2, 32, 32, 3)),
    ("dc critic 5x5 s2 4->8 @16", False, dict(features=8, kernel_size=(5, 5), strides=(2, 2)), (2, 16, 16, 4)),
    # gan.py MerganDiscriminator (padding="SAME", input padded to 32): 32 -> 16 -> 8 -> 4
    ("mergan critic 5x5 s2 8->16 @8", False, dict(features=16, kernel_size=(5, 5), strides=(2, 2), padding="SAME"), (2, 8, 8, 8)),
    # gan.py DCGenerator (default padding SAME): H/4 -> H/2 -> H for 28 and 32
    ("dc gen convT 5x5 s2 8->4 @7", True, dict(features=4, kernel_size=(5, 5), strides=(2, 2)), (2, 7, 7, 8)),
    ("dc gen convT 5x5 s2 4->1 @14", True, dict(features=1, kernel_size=(5, 5), strides=(2, 2)), (2, 14, 14, 4)),
    ("dc gen convT 5x5 s2 8->4 @8", True, dict(features=4, kernel_size=(5, 5), strides=(2, 2)), (2, 8, 8, 8)),
    ("dc gen convT 5x5 s2 4->3 @16", True, dict(features=3, kernel_size=(5, 5), strides=(2, 2)), (2, 16, 16, 4)),
    # gan.py MerganGenerator (padding="SAME"): 4 -> 8 -> 16 -> 32
    ("mergan gen convT 5x5 s2 16->8 @4", True, dict(features=8, kernel_size=(5, 5), strides=(2, 2), padding="SAME"), (2, 4, 4, 16)),
    ("mergan gen convT 5x5 s2 4->1 @16", True, dict(features=1, kernel_size=(5, 5), strides=(2, 2), padding="SAME"), (2, 16, 16, 4)),
]  # fmt: skip

# arguments no model uses yet: strides, paddings, dilations and kernel forms in general
GENERAL_LAYERS = [
    ("conv 4x3 s(3,2) VALID", False, dict(features=3, kernel_size=(4, 3), strides=(3, 2), padding="VALID"), (2, 11, 9, 2)),
    ("conv 3x3 pairs ((2,0),(1,3)) dil 2", False, dict(features=3, kernel_size=(3, 3), padding=((2, 0), (1, 3)), kernel_dilation=2), (2, 9, 8, 2)),
    ("conv 3x3 s2 input dilation 2", False, dict(features=3, kernel_size=(3, 3), strides=2, padding=((1, 1), (0, 2)), input_dilation=(2, 1)), (2, 5, 6, 2)),
    ("conv 1d k3 s2 SAME", False, dict(features=3, kernel_size=3, strides=2), (2, 9, 2)),
    ("conv 3x3 no batch axis", False, dict(features=3, kernel_size=(3, 3)), (6, 6, 2)),
    ("conv 3x3 two batch axes", False, dict(features=3, kernel_size=(3, 3), strides=2), (2, 3, 5, 5, 2)),
    ("convT 4x4 s2 VALID", True, dict(features=3, kernel_size=(4, 4), strides=(2, 2), padding="VALID"), (2, 5, 5, 2)),
    ("convT 3x4 s(3,2) SAME transpose_kernel", True, dict(features=3, kernel_size=(3, 4), strides=(3, 2), transpose_kernel=True), (2, 4, 5, 2)),
    ("convT 3x3 s2 pairs ((2,-1),(0,1)) dil 2", True, dict(features=3, kernel_size=(3, 3), strides=(2, 2), padding=((2, -1), (0, 1)), kernel_dilation=(2, 1)), (2, 5, 6, 2)),
    ("convT 2x2 s3 (stride > kernel)", True, dict(features=3, kernel_size=(2, 2), strides=(3, 3), padding="VALID"), (2, 4, 4, 2)),
    ("convT 3x3 s1 int padding 1", True, dict(features=3, kernel_size=(3, 3), padding=1), (2, 5, 5, 2)),
]  # fmt: skip

ALL = MODEL_LAYERS + GENERAL_LAYERS


def _layers(transposed, kwargs, **extra):
    """(flax's layer, cljax's) for the same arguments."""
    flax_cls, ours = (nn.ConvTranspose, conv.ConvTranspose) if transposed else (nn.Conv, conv.Conv)
    return flax_cls(**kwargs, **extra), ours


def _values_and_grads(module, params, x, ct):
    """The layer's output and the gradients of <output, ct> wrt the input and the params."""
    y, vjp = jax.vjp(lambda p, x: module.apply({"params": p}, x), params, x)
    return y, vjp(ct)


def _close(a, b, rtol):
    """Elementwise within rtol of the reference's largest magnitude (summation order differs:
    float32 sums of ~500 products, measured at most 1e-6 of it; bfloat16: 0 on XLA:CPU)."""
    for x, ref in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == ref.shape and x.dtype == ref.dtype
        x, ref = np.asarray(x, np.float32), np.asarray(ref, np.float32)
        np.testing.assert_allclose(x, ref, rtol=rtol, atol=rtol * max(1.0, np.abs(ref).max()))


def _normal(shape, seed):
    """Numpy's normals (drawing with jax.random would compile a program per shape)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _case(ref, shape):
    """Input, parameters and output cotangent for flax's layer `ref` (normals), and the
    shapes of its variables."""
    x = _normal(shape, 0)
    out, variables = jax.eval_shape(ref.init_with_output, jax.random.key(0), x)
    params = {k: _normal(v.shape, i + 1) for i, (k, v) in enumerate(variables["params"].items())}
    return x, params, _normal(out.shape, 9), variables


@pytest.mark.parametrize("name, transposed, kwargs, shape", ALL, ids=[c[0] for c in ALL])
def test_matches_flax_values_and_gradients(name, transposed, kwargs, shape):
    ref, ours = _layers(transposed, kwargs)
    mine, mine_lax = ours(**kwargs, impl="im2col"), ours(**kwargs, impl="lax")
    x, params, ct, variables = _case(ref, shape)
    # the same parameters: names, shapes and dtypes (values: the model test below)
    assert jax.eval_shape(mine.init, jax.random.key(0), x) == variables

    @jax.jit  # one program a case: compiling is most of this test's time
    def run(params, x, ct):
        return (
            _values_and_grads(ref, params, x, ct),
            _values_and_grads(mine, params, x, ct),
            mine_lax.apply({"params": params}, x),
        )

    expected, got, via_lax = run(params, x, ct)
    _close(got, expected, rtol=5e-6)
    # impl="lax" is flax's own call: the same bits
    np.testing.assert_array_equal(via_lax, expected[0])


SOME = [MODEL_LAYERS[i] for i in (2, 5, 9)]  # resnet 3x3 s2, dc critic @14, dc gen convT @7


@pytest.mark.parametrize("name, transposed, kwargs, shape", SOME, ids=[c[0] for c in SOME])
def test_bfloat16_compute_float32_params(name, transposed, kwargs, shape):
    ref, ours = _layers(transposed, kwargs, dtype=jnp.bfloat16)
    mine = ours(**kwargs, dtype=jnp.bfloat16, impl="im2col")
    x, params, _, _ = _case(ref, shape)
    variables = jax.eval_shape(mine.init, jax.random.key(0), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    run = jax.jit(lambda p, x: (mine.apply({"params": p}, x), ref.apply({"params": p}, x)))
    got, expected = run(params, x)
    assert got.dtype == jnp.bfloat16
    _close(got, expected, rtol=2e-2)


@pytest.mark.parametrize("name, transposed, kwargs, shape", SOME, ids=[c[0] for c in SOME])
def test_inside_scan_same_values(name, transposed, kwargs, shape):
    """Three steps of a `lax.scan` (the compiled task's loop) carrying the params: the
    outputs and the gradients equal flax's layer, step by step, in straight-line code."""
    ref, ours = _layers(transposed, kwargs)
    mine = ours(**kwargs, impl="im2col")
    x, params, ct, _ = _case(ref, shape)
    xs = np.stack([x, 2 * x, x - 1])

    def step(module, p, x, ct):
        y, (g, gx) = _values_and_grads(module, p, x, ct)
        return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), (y, gx, g)

    @jax.jit
    def run(params, xs, ct):
        _, got = jax.lax.scan(lambda p, x: step(mine, p, x, ct), params, xs)
        expected, p = [], params
        for x in xs:  # unrolled: flax's conv outside any loop
            p, outs = step(ref, p, x, ct)
            expected.append(outs)
        return got, jax.tree.map(lambda *a: jnp.stack(a), *expected)

    got, expected = run(params, xs, ct)
    _close(got, expected, rtol=1e-5)


@pytest.mark.parametrize("name, transposed, kwargs, shape", SOME, ids=[c[0] for c in SOME])
def test_second_order_gradients(name, transposed, kwargs, shape):
    """WGAN-GP's penalty differentiates the input gradient again, wrt the params and input."""
    ref, ours = _layers(transposed, kwargs)
    mine = ours(**kwargs, impl="im2col")
    x, params, ct, _ = _case(ref, shape)

    def penalty_grads(module, params, x):
        def penalty(p, x):
            gx = jax.grad(lambda x: jnp.vdot(module.apply({"params": p}, x), ct))(x)
            return jnp.sum(gx**2) + jnp.sum(jnp.tanh(gx) * x)  # the second term: x-dependent

        return jax.grad(penalty, argnums=(0, 1))(params, x)

    run = jax.jit(lambda p, x: (penalty_grads(mine, p, x), penalty_grads(ref, p, x)))
    got, expected = run(params, x)
    _close(got, expected, rtol=1e-5)


@pytest.mark.parametrize("name, transposed, kwargs, shape", SOME, ids=[c[0] for c in SOME])
def test_backward_keeps_the_input_not_the_patches(name, transposed, kwargs, shape):
    """The residuals saved for the backward pass are no larger than flax's (input, kernel)."""
    ref, ours = _layers(transposed, kwargs)
    mine = ours(**kwargs, impl="im2col")
    x, params, _, _ = _case(ref, shape)

    def residual_bytes(module):
        vjp = lambda p, x: jax.tree.leaves(
            jax.vjp(lambda p, x: module.apply({"params": p}, x), p, x)[1]
        )
        return sum(r.size * r.dtype.itemsize for r in jax.eval_shape(vjp, params, x))

    assert residual_bytes(mine) <= residual_bytes(ref)


def test_variables_interchangeable_inside_a_model(monkeypatch):
    """A model written with cljax's layers has flax's parameter tree, names included."""
    monkeypatch.setenv(conv.ENV_VAR, "im2col")  # the CPU default (the suite runs lax)

    class Net(nn.Module):
        layers: tuple

        @nn.compact
        def __call__(self, x):
            conv_cls, transpose_cls = self.layers
            x = nn.relu(conv_cls(4, (5, 5), (2, 2))(x))
            x = conv_cls(4, (3, 3), 1, padding=1, use_bias=False)(x)
            return transpose_cls(2, (5, 5), (2, 2), padding="SAME")(x)

    ref, ours = Net((nn.Conv, nn.ConvTranspose)), Net((conv.Conv, conv.ConvTranspose))

    @jax.jit
    def run(x):
        variables = ref.init(jax.random.key(3), x)
        mine = ours.init(jax.random.key(3), x)
        return variables, mine, ref.apply(variables, x), ours.apply(variables, x)

    variables, mine, expected, got = run(_normal((1, 8, 8, 1), 4))
    assert jax.tree.structure(mine) == jax.tree.structure(variables)
    assert jax.tree.all(jax.tree.map(np.array_equal, mine, variables))
    _close(got, expected, rtol=5e-6)


def test_impl_choice_and_unsupported_arguments(monkeypatch):
    monkeypatch.delenv(conv.ENV_VAR, raising=False)
    assert conv.resolve_impl("auto") == ("im2col" if jax.default_backend() == "cpu" else "lax")
    assert conv.resolve_impl("lax") == "lax"
    monkeypatch.setenv(conv.ENV_VAR, "lax")
    assert conv.resolve_impl("auto") == "lax" and conv.resolve_impl("im2col") == "im2col"
    monkeypatch.setenv(conv.ENV_VAR, "fft")
    with pytest.raises(ValueError, match=r"\$CLJAX_CONV_IMPL='fft': choose im2col or lax"):
        conv.resolve_impl("auto")
    with pytest.raises(ValueError, match="unknown conv impl"):
        conv.resolve_impl("fft")
    x = jnp.ones((1, 5, 5, 2))
    with pytest.raises(NotImplementedError, match="CIRCULAR"):
        conv.Conv(2, (3, 3), padding="CIRCULAR").init(jax.random.key(0), x)
    with pytest.raises(NotImplementedError, match="one feature group"):
        conv.Conv(2, (3, 3), feature_group_count=2, impl="im2col").init(jax.random.key(0), x)
