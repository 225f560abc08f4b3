"""Convolution speed straight-line in `jit` and inside a compiled loop: flax's `lax.conv`
layers against `cljax.models.conv` (im2col), per layer of the models.

    python -m experiments.conv_bench                 # the four layers, 4 calls, best of 3
    python -m experiments.conv_bench --repeats 1 --layers resnet64 gan-convT

For each layer (the table of ../shared/NOTES-STACK.md, "Convolutions inside a compiled
loop on XLA:CPU") and each of forward, gradient wrt the input, gradient wrt the kernel
and all three together (a training step's share), times `--iters` dependent calls (the
input and the params moved by a scalar of each call's result, so no call is shared,
dropped or hoisted) either unrolled in one `jit` ("jit") or as a `lax.fori_loop` in one
`jit` ("loop", the shape of a scanned task), for flax's `nn.Conv` / `nn.ConvTranspose`
and for `cljax.models.conv` with `impl="im2col"`, on the same variables. Prints a
markdown table of milliseconds per call (best of `--repeats` after a warm-up run,
compile excluded) and the ratios. The "jit" column of im2col carries a cost the loop
amortises: a fresh program's large buffers (the patches) are first touched every run.
Runtime at the defaults on 2 CPU cores: about 10 minutes, most of it flax's kernel
gradient inside the loop.
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cljax.models import conv


class Layer(NamedTuple):
    name: str
    what: str
    transpose: bool
    kwargs: dict
    input_shape: tuple  # NHWC


LAYERS = (
    Layer("resnet64", "ResNet 3x3 64->64 @32x32 (32)", False,
          dict(features=64, kernel_size=(3, 3), strides=1, padding=1, use_bias=False),
          (32, 32, 32, 64)),
    Layer("resnet128", "ResNet 3x3 128->128 @16x16 (32)", False,
          dict(features=128, kernel_size=(3, 3), strides=1, padding=1, use_bias=False),
          (32, 16, 16, 128)),
    Layer("gan-critic", "GAN critic 5x5 s2 64->128 @14x14 (64)", False,
          dict(features=128, kernel_size=(5, 5), strides=(2, 2)),
          (64, 14, 14, 64)),
    Layer("gan-convT", "GAN generator convT 5x5 s2 128->64 @7x7 (64)", True,
          dict(features=64, kernel_size=(5, 5), strides=(2, 2)),
          (64, 7, 7, 128)),
)  # fmt: skip
QUANTITIES = ("forward", "grad wrt input", "grad wrt kernel", "forward + both grads")


def _module(layer: Layer, impl: str | None, dtype):
    """flax's layer (`impl` None) or cljax's with `impl`."""
    if impl is None:
        cls = nn.ConvTranspose if layer.transpose else nn.Conv
        return cls(**layer.kwargs, dtype=dtype)
    cls = conv.ConvTranspose if layer.transpose else conv.Conv
    return cls(**layer.kwargs, dtype=dtype, impl=impl)


def _program(module, quantity: str, iters: int, loop: bool):
    """jit((x, params, cotangent) -> (x, params)) running `iters` dependent calls of
    `quantity`; both the input and the params move with each call, as in training (a
    loop-invariant one would let XLA hoist its half of the work out of the loop)."""
    apply = lambda p, x: module.apply({"params": p}, x)

    def call(carry, ct):
        x, p = carry
        if quantity == "forward":
            q = apply(p, x)
        elif quantity == "grad wrt input":
            q = jax.vjp(lambda x_: apply(p, x_), x)[1](ct)[0]
        elif quantity == "grad wrt kernel":
            q = jax.vjp(lambda p_: apply(p_, x), p)[1](ct)[0]["kernel"]
        else:  # a training step's share: the output and both gradients
            y, vjp = jax.vjp(apply, p, x)
            g, gx = vjp(ct)
            q = jnp.mean(y) + jnp.mean(gx) + jnp.mean(g["kernel"])
        # the next call depends on this call's result (a scalar: no real cost)
        return jax.tree.map(lambda c: c + 1e-6 * jnp.mean(q).astype(c.dtype), carry)

    def run(x, p, ct):
        if loop:
            return jax.lax.fori_loop(0, iters, lambda _, c: call(c, ct), (x, p))
        carry = (x, p)
        for _ in range(iters):
            carry = call(carry, ct)
        return carry

    return jax.jit(run)


def time_ms(fn, args, repeats: int) -> float:
    """Best of `repeats` timed calls after one warm-up, compile excluded, in ms."""
    compiled = fn.lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def bench(layer: Layer, iters: int, repeats: int, dtype) -> dict:
    """{(impl, quantity, mode): ms per call} for one layer; impl 'lax' is flax's layer."""
    key_x, key_p, key_ct = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, layer.input_shape)
    ref = _module(layer, None, dtype)
    params = ref.init(key_p, x)["params"]
    out = jax.eval_shape(lambda: ref.apply({"params": params}, x))
    ct = jax.random.normal(key_ct, out.shape, out.dtype)
    times = {}
    for impl, module in (("lax", ref), ("im2col", _module(layer, "im2col", dtype))):
        for quantity in QUANTITIES:
            for mode in ("jit", "loop"):
                fn = _program(module, quantity, iters, mode == "loop")
                times[impl, quantity, mode] = time_ms(fn, (x, params, ct), repeats) / iters
    return times


def table(results: dict) -> str:
    """The markdown table of `{layer: bench(...)}`."""
    rows = [
        "| layer (batch) | quantity | flax lax.conv: jit / loop (x) "
        "| im2col: jit / loop (x) | loop: flax / im2col |",
        "|---|---|---|---|---|",
    ]
    for what, t in results.items():
        for q in QUANTITIES:
            lj, ll, ij, il = (t[i, q, m] for i in ("lax", "im2col") for m in ("jit", "loop"))
            rows.append(
                f"| {what} | {q} | {lj:,.1f} / {ll:,.1f} (x{ll / lj:.1f}) "
                f"| {ij:,.1f} / {il:,.1f} (x{il / ij:.1f}) | x{ll / il:.1f} |"
            )
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = [layer.name for layer in LAYERS]
    p.add_argument("--layers", nargs="+", choices=names, default=names)
    p.add_argument("--iters", type=int, default=4, help="dependent calls a program")
    p.add_argument("--repeats", type=int, default=3, help="timed runs a program (best)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = p.parse_args(argv)
    dtype = jnp.dtype(args.dtype)
    results = {}
    for layer in LAYERS:
        if layer.name in args.layers:
            results[layer.what] = bench(layer, args.iters, args.repeats, dtype)
    print(
        f"ms per call ({jax.default_backend()}, {jax.device_count()} device(s), {args.dtype}, "
        f"{args.iters} calls a program, best of {args.repeats})\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
