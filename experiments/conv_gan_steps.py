"""A MeRGAN iteration of the authors' conv GAN pair (`mergan-dc`), cljax against PyTorch.

At MNIST shape, cljax inside the compiled task against PyTorch on the same CPU (issue 48's
conv table, second row).

    python -m experiments.conv_gan_steps [--steps 3] [--repeats 2] [--variant ra]
        [--torch-threads 2] [--no-torch]

One iteration: WGAN-GP with the AC-GAN class head, 5 critic steps (each on its own 64 real
images and 64 generated ones, gradient penalty 10) then one generator step on 64 generated
images; Adam lr 1e-4, betas (0, 0.9) for both networks; 32x32x1 images, 10 classes, z of
128 (the MeRGAN authors' MNIST setting, their `gan32_model` pair).

cljax, each as `--steps` iterations scanned in one jitted program (the compiled task's
form), its compile time and the seconds an iteration after it (each repeat a fresh call):
- `mergan.make(..., gan="mergan-dc").train_step` on a batch of 5 x 64 = 320 images, as the
  driver runs it. Besides the GAN iteration it takes the solver's step (Adam, Mammoth's
  MNIST MLP, on the first chunk's 64 real images and 64 images of the previous generator:
  one more generator forward of 64) and, for RA, the replay alignment (two more generator
  forwards of 64, one of them differentiated). No setting turns these off (`solver_steps`
  >= 1, and the replay terms are computed even before a previous generator exists, there
  weighted or masked to zero), so also:
- the GAN iteration alone: `generative.critic_then_generator` called as `mergan`'s RA step
  calls it, without the solver and the alignment.
JR (`--variant jr`) doubles the critic's batch: 64 real + 64 replayed images and 128
generated ones a critic step, the previous generator run on all 320 every iteration.

PyTorch: the same two networks written with torch's layers (`nn.Conv2d`,
`nn.ConvTranspose2d`, batch-statistics BatchNorm with a scale and offset per class), the
same iteration (gradient penalty through `torch.autograd.grad(create_graph=True)`); median
of `--steps` iterations after one warm-up. The parameter counts of both are printed and must
agree. torch's padding (2, and output padding 1 for the transposed convolutions) places the
5x5 windows one pixel off 'SAME''s (1 before, 2 after) and its tensors are NCHW, not NHWC:
the same work, not the same numbers. Run it alone on the machine: the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from cljax import methods, models
from cljax.benchmarks import scenarios
from cljax.methods import generative as gan_lib
from cljax.methods import mergan
from cljax.methods.generative import chunks
from cljax.models import gan as gan_models
from experiments.conv_steps import scanned_timing

SHAPE = (32, 32, 1)
CLASSES = 10
N_CRITIC = 5
CHUNK = 64
Z_DIM = 128
GAN = dict(gan="mergan-dc", n_critic=N_CRITIC, z_dim=Z_DIM, g_lr=1e-4, d_lr=1e-4, b1=0.0, b2=0.9)


def n_params(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def cljax_method(variant: str):
    """`mergan` as the driver builds it for seq-mnist (Mammoth's MLP solver), and its state at
    the start of a task of all ten classes."""
    method = methods.get("mergan").make(
        model=models.make("mlp", CLASSES),
        input_fn=scenarios.scaled_input(255.0),
        variant=variant,
        lr=1e-3,
        **GAN,
    )
    state = method.init(jax.random.key(0), np.zeros((1, *SHAPE), np.uint8))
    task = methods.TaskInfo(index=0, classes=tuple(range(CLASSES)))
    return method, method.begin_task(state, task, None)


def gan_only_step(input_fn, state, batch, key):
    """The GAN iteration of `mergan`'s RA step alone: no solver, no replay alignment."""
    p = gan_models.GanParts("mergan-dc", SHAPE, CLASSES, Z_DIM)  # only for `sample_z`
    x = input_fn(batch["x"], None, True)
    real, real_y = chunks(x, N_CRITIC), chunks(batch["y"], N_CRITIC)
    b = real.shape[1]
    gen, disc, metrics = gan_lib.critic_then_generator(
        state.gen,
        state.disc,
        real,
        jnp.ones((N_CRITIC, b)),
        key,
        sample_z=lambda k: p.sample_z(k, b),
        loss="wgan-gp",
        real_y_chunks=real_y,
        fake_labels=lambda k: mergan.sample_labels(k, state.current, b),
    )
    return state.replace(gen=gen, disc=disc), metrics


def time_scanned(step, state, steps: int, repeats: int) -> dict:
    """Compile and per-iteration seconds of `step` scanned over `steps` batches of 320."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (steps, N_CRITIC * CHUNK, *SHAPE), np.uint8)
    y = rng.integers(0, CLASSES, (steps, N_CRITIC * CHUNK), np.int32)

    timing = scanned_timing(step, state, x, y, repeats)
    metrics = timing.pop("metrics")
    finite = all(bool(jnp.isfinite(v).all()) for v in jax.tree.leaves(metrics))
    return {
        **timing,
        "finite": finite,
    }


def torch_pair():
    """The `mergan-dc` generator and critic (cljax/models/gan.py) in torch's layers, NCHW."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class CondBatchNorm(nn.Module):
        """Batch statistics always (no running averages), a scale and offset per class."""

        def __init__(self, channels):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(CLASSES, channels))
            self.offset = nn.Parameter(torch.zeros(CLASSES, channels))

        def forward(self, x, y):
            x = F.batch_norm(x, None, None, training=True, eps=1e-5)
            return x * self.scale[y][:, :, None, None] + self.offset[y][:, :, None, None]

    class Generator(nn.Module):
        def __init__(self, dim=32):
            super().__init__()
            self.dim = dim
            self.fc = nn.Linear(Z_DIM, 4 * 4 * 4 * dim)
            widths = (4 * dim, 2 * dim, dim, SHAPE[2])
            self.bns = nn.ModuleList(CondBatchNorm(c) for c in widths[:-1])
            # 5x5 stride 2, output twice the input ('SAME'): padding 2, output_padding 1
            self.convs = nn.ModuleList(
                nn.ConvTranspose2d(a, b, 5, 2, padding=2, output_padding=1)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            )

        def forward(self, z, y):
            x = self.fc(z).view(z.shape[0], 4 * self.dim, 4, 4)
            for bn, conv in zip(self.bns, self.convs, strict=True):
                x = conv(F.relu(bn(x, y)))
            return (torch.tanh(x) + 1.0) / 2.0

    class Discriminator(nn.Module):
        def __init__(self, dim=32):
            super().__init__()
            widths = (SHAPE[2], dim, 2 * dim, 4 * dim)
            self.convs = nn.ModuleList(
                nn.Conv2d(a, b, 5, 2, padding=2)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            )
            self.adv = nn.Linear(4 * 4 * 4 * dim, 1)
            self.cls = nn.Linear(4 * 4 * 4 * dim, CLASSES)

        def forward(self, x):
            for conv in self.convs:
                x = F.leaky_relu(conv(x), 0.2)
            x = x.flatten(1)
            return self.adv(x)[:, 0], self.cls(x)

    return Generator(), Discriminator()


def torch_mergan(steps: int, threads: int) -> dict:
    """Median seconds of one WGAN-GP AC-GAN iteration in PyTorch (same networks and sizes)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    g, d = torch_pair()
    g_opt = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.0, 0.9))
    d_opt = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.0, 0.9))
    shape = (CHUNK, SHAPE[2], *SHAPE[:2])

    def critic_step(x_u8, y):
        real = x_u8 / 255.0
        with torch.no_grad():
            fake = g(torch.randn(CHUNK, Z_DIM), torch.randint(0, CLASSES, (CHUNK,)))
        d_opt.zero_grad()
        adv_real, cls_real = d(real)
        adv_fake, _ = d(fake)
        eps = torch.rand(CHUNK, 1, 1, 1)
        mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grads,) = torch.autograd.grad(d(mixed)[0].sum(), mixed, create_graph=True)
        norms = torch.sqrt(grads.flatten(1).pow(2).sum(1) + 1e-12)
        loss = adv_fake.mean() - adv_real.mean() + 10.0 * (norms - 1.0).pow(2).mean()
        loss = loss + F.cross_entropy(cls_real, y)  # the class head learns from real images
        loss.backward()
        d_opt.step()
        return loss.detach()

    def generator_step():
        for q in d.parameters():
            q.requires_grad_(False)
        g_opt.zero_grad()
        fy = torch.randint(0, CLASSES, (CHUNK,))
        adv, cls = d(g(torch.randn(CHUNK, Z_DIM), fy))
        loss = -adv.mean() + F.cross_entropy(cls, fy)
        loss.backward()
        g_opt.step()
        for q in d.parameters():
            q.requires_grad_(True)
        return loss.detach()

    times, losses = [], []
    for i in range(steps + 1):
        xs = torch.randint(0, 256, (N_CRITIC, *shape)).float()
        ys = torch.randint(0, CLASSES, (N_CRITIC, CHUNK))
        start = time.perf_counter()
        for k in range(N_CRITIC):
            d_loss = critic_step(xs[k], ys[k])
        g_loss = generator_step()
        if i:  # the first iteration warms up
            times.append(time.perf_counter() - start)
        losses += [float(d_loss), float(g_loss)]
    return {
        "step_s": statistics.median(times),
        "runs": times,
        "finite": all(np.isfinite(losses)),
        "params": tuple(sum(q.numel() for q in m.parameters()) for m in (g, d)),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variant", choices=("ra", "jr"), default="ra")
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    method, state = cljax_method(args.variant)
    params = (n_params(state.gen.params), n_params(state.disc.params))
    gan_only = lambda s, batch, key: gan_only_step(scenarios.scaled_input(255.0), s, batch, key)  # noqa: E731
    out = {
        "params": params,
        "cljax": time_scanned(method.train_step, state, args.steps, args.repeats),
        "cljax_gan": time_scanned(gan_only, state, args.steps, args.repeats),
    }
    if not args.no_torch:
        out["torch"] = torch_mergan(args.steps, args.torch_threads)
        assert out["torch"]["params"] == params, (out["torch"]["params"], params)
    c, cg = out["cljax"], out["cljax_gan"]
    extra = {
        "ra": "the solver's step, the previous generator on 64 images, RA's alignment "
        "(2 generator forwards of 64)",
        "jr": "the solver's step, the previous generator on 320 images, the critic on 64 real "
        "+ 64 replayed and 128 generated a step",
    }[args.variant]
    print(
        f"MeRGAN mergan-dc iteration: WGAN-GP + AC head, {N_CRITIC} critic steps of {CHUNK} + 1 "
        f"generator step, {'x'.join(map(str, SHAPE))}, {CLASSES} classes, {jax.devices()[0]}"
    )
    same = " (PyTorch's the same)" if "torch" in out else ""
    print(f"parameters: generator {params[0]:,}, critic {params[1]:,}{same}")
    print(
        f"cljax mergan {args.variant} train_step in one scanned program of {args.steps} iterations "
        f"(with {extra}): compile {c['compile_s']:.1f} s, {c['step_s']:.3f} s an iteration "
        f"{[round(r, 3) for r in c['runs']]}"
    )
    print(
        f"cljax GAN iteration alone (critic_then_generator), {args.steps} scanned: compile "
        f"{cg['compile_s']:.1f} s, {cg['step_s']:.3f} s an iteration {[round(r, 3) for r in cg['runs']]}"
    )
    if "torch" in out:
        t = out["torch"]
        print(
            f"PyTorch {args.torch_threads} thread(s): {t['step_s']:.3f} s an iteration "
            f"{[round(r, 3) for r in t['runs']]}; cljax / torch {c['step_s'] / t['step_s']:.2f} "
            f"(train_step), {cg['step_s'] / t['step_s']:.2f} (GAN iteration alone)"
        )
    if not all(r["finite"] for k, r in out.items() if k != "params"):
        print("warning: a loss was not finite")
    return out


if __name__ == "__main__":
    main()
