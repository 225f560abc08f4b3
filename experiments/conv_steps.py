"""A DER++ step of the reduced ResNet-18 at CIFAR shape: cljax inside the compiled task
against PyTorch on the same CPU (issue 48's conv table, first row).

    python -m experiments.conv_steps [--nf 64] [--steps 4] [--repeats 2] [--torch-threads 2]
    python -m experiments.conv_steps --seeds 1 5 --dtypes float32 bfloat16 --steps 50 --no-torch
        # the GPU check (issue 47 item 6): steps/s at 1 and 5 vmapped seeds, f32 and bf16

cljax: `derpp.make(...).train_step` scanned over `--steps` steps in one jitted program (the
compiled task's form), the buffer full, batch 32 plus two replay minibatches of 32; the
program's compile time and the seconds a step after it (each repeat a fresh call of the
compiled program). Its convolutions are `cljax.models.conv.Conv` (im2col on a CPU). PyTorch: the same network (`tests/torch_reference.ResNet18`,
torch's own layers), the same three forwards (batch, two replay minibatches), DER++'s loss
(CE + alpha MSE on logits + beta CE), one SGD step; median of `--steps` steps after one
warm-up step. Run it alone on the machine: the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cljax import models
from cljax.benchmarks import scenarios
from cljax.methods import derpp

CIFAR = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615))


def cljax_derpp(nf: int, steps: int, repeats: int, seeds: int = 1, dtype="float32") -> dict:
    """Compile and per-step seconds of DER++ scanned over `steps` steps, `seeds` seeds under
    `vmap` (the data shared, as the driver runs them), computing in `dtype`."""
    model = models.ResNet18(num_classes=10, nf=nf, dtype=models.DTYPES[dtype])
    method = derpp.make(
        model=model,
        input_fn=scenarios.cifar_input(*CIFAR),
        lr=0.03,
        alpha=0.2,
        beta=0.5,
        buffer_size=500,
        minibatch_size=32,
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (steps, 32, 32, 32, 3), np.uint8)
    y = rng.integers(0, 10, (steps, 32), np.int32)
    state = method.init(jax.random.key(0), x[0, :1])
    fill = {"x": jnp.asarray(rng.integers(0, 256, (500, 32, 32, 3), np.uint8))}
    state = state.replace(
        buffer=state.buffer.replace(
            data={**state.buffer.data, "x": fill["x"]},
            num_seen=jnp.asarray(500, state.buffer.num_seen.dtype),
        )
    )

    if seeds == 1:
        return scanned_timing(method.train_step, state, x, y, repeats)
    states = jax.tree.map(lambda a: jnp.stack([a] * seeds), state)
    keys_of = lambda k: jax.random.split(k, seeds)  # noqa: E731
    step = jax.vmap(lambda s, b, k: method.train_step(s, b, k), (0, None, 0))
    return scanned_timing(lambda s, b, k: step(s, b, keys_of(k)), states, x, y, repeats)


def scanned_timing(step, state, x, y, repeats: int) -> dict:
    """`step(state, {"x", "y"}, key)` scanned over the leading axis of `x`, `y` in one jitted
    program: its compile seconds, the median seconds a step over `repeats` calls, the last
    call's metrics."""

    def task(state, xs, ys, key):
        keys = jax.random.split(key, xs.shape[0])
        body = lambda s, inp: step(s, {"x": inp[0], "y": inp[1]}, inp[2])  # noqa: E731
        return jax.lax.scan(body, state, (xs, ys, keys))

    start = time.perf_counter()
    compiled = jax.jit(task).lower(state, x, y, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - start
    per_step = []
    for r in range(repeats):
        start = time.perf_counter()
        out, metrics = compiled(state, x, y, jax.random.key(2 + r))
        jax.block_until_ready((out, metrics))
        per_step.append((time.perf_counter() - start) / x.shape[0])
    return {
        "compile_s": compile_s,
        "step_s": statistics.median(per_step),
        "runs": per_step,
        "metrics": metrics,
    }


def torch_derpp(nf: int, steps: int, threads: int) -> dict:
    """Median seconds of a DER++ step in PyTorch (same network and batch sizes)."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.torch_reference import ResNet18

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = ResNet18(num_classes=10, nf=nf)
    opt = torch.optim.SGD(net.parameters(), lr=0.03)
    mean = torch.tensor(CIFAR[0]).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR[1]).view(1, 3, 1, 1)
    prep = lambda a: (a / 255.0 - mean) / std  # noqa: E731

    def batch():
        return torch.randint(0, 256, (32, 3, 32, 32)).float(), torch.randint(0, 10, (32,))

    buf_logits = torch.randn(32, 10)
    times = []
    for i in range(steps + 1):
        (xb, yb), (x1, _), (x2, y2) = batch(), batch(), batch()
        start = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(net(prep(xb)), yb)
        loss = loss + 0.2 * F.mse_loss(net(prep(x1)), buf_logits)
        loss = loss + 0.5 * F.cross_entropy(net(prep(x2)), y2)
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times), "runs": times}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nf", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="vmapped seeds (cljax)")
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    args = p.parse_args(argv)
    print(f"DER++ ResNet-18 nf {args.nf}, batch 32 + 2 x 32 replayed, {jax.devices()[0]}")
    for dtype in args.dtypes:
        for seeds in args.seeds:
            if (seeds, dtype) == (1, "float32"):
                continue  # the first line, below
            c = cljax_derpp(args.nf, args.steps, args.repeats, seeds, dtype)
            print(
                f"cljax {dtype}, {seeds} seeds vmapped, {args.steps} steps scanned: compile "
                f"{c['compile_s']:.1f} s, {c['step_s']:.3f} s a step, "
                f"{seeds / c['step_s']:.1f} seed-steps/s"
            )
    out = {"cljax": cljax_derpp(args.nf, args.steps, args.repeats)}
    out["cljax"].pop("metrics")
    if not args.no_torch:
        out["torch"] = torch_derpp(args.nf, args.steps, args.torch_threads)
    c = out["cljax"]
    print(
        f"cljax in one scanned program of {args.steps} steps: compile {c['compile_s']:.1f} s, {c['step_s']:.3f} s a step {[round(r, 3) for r in c['runs']]}"
    )
    if "torch" in out:
        t = out["torch"]
        print(
            f"PyTorch {args.torch_threads} thread(s): {t['step_s']:.3f} s a step; cljax / torch {c['step_s'] / t['step_s']:.2f}"
        )
    return out


if __name__ == "__main__":
    main()
