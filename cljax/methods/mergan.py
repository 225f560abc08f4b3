"""Memory Replay GANs (`mergan`): Wu et al., NeurIPS 2018 (arXiv 1809.02058).

A class-conditional WGAN-GP with an auxiliary classifier (AC-GAN) learns one
task after another; the generator of the previous task, frozen, replays the
previous classes. Two variants (`variant=jr|ra`):

- joint retraining with replay (JR): the critic's real data is the current
  task's images plus replayed images of every previous class, and the
  generator learns all classes seen;
- replay alignment (RA): the critic sees current data only, and the generator
  pays ra_weight * sum ||G_t(z, c) - G_{t-1}(z, c)||^2 / 2 for previous classes c
  with the same z (pixels in [-1, 1]; summed over the batch and divided by the
  number of previous classes, as the authors' `tf.nn.l2_loss` term; 1e-3 on MNIST).

The accuracy matrix is that of a solver (the benchmark's classifier, Adam)
trained alongside on real current data and generated previous classes, and
tested on the real test set (the protocol of the DGM paper for its own method).
By default the solver takes one step an iteration, on the first of the
iteration's `n_critic` batches of real data (64 real + 64 replayed images);
`solver_steps=n_critic` steps it on each of them, so it sees every real image
the critic sees and n_critic times as many replayed ones, as DGM's solver (its
critic's class head) trains alongside every critic step.
The MeRGAN paper measures the generator instead: its authors' code labels
generated samples of each class seen with a classifier trained on real data
(`cljax.run.evaluate.generated_accuracy`; `experiments/reproduce_generative.py`
reports both). The two can disagree: samples of an old class that such a
classifier labels right may still cover only part of the class, and teach a
fresh classifier much less of it (`experiments/generated_coverage.py` compares them).

Settings as the authors' TF code: Adam lr 1e-4, beta1 0, beta2 0.9 for both
networks, 5 critic iterations per generator step, gradient penalty 10, batch 64,
z of 128, AC-GAN weight 1. Deviations: images are generated in the solver's
input space (28x28 in [0, 1] for MNIST, not padded 32x32 in [-1, 1]); in JR the
mixture of current and replayed classes is weighted 1/t and 1 - 1/t in one
critic loss (the authors sum one unweighted term per class, equal up to a
factor t, with no gradient penalty on the replay terms); Adam's moments are
kept across tasks (the authors reset them).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from cljax.core.config import hparam
from cljax.methods import HostHooks, Method, Needs, configure, scholar
from cljax.methods import generative as gan_lib
from cljax.methods.generative import chunks
from cljax.methods.scholar import ScholarConfig, ScholarParts, ScholarState

TEST_CONFIG = {"n_critic": 2, "z_dim": 8}
check_run = gan_lib.check_run  # n_critic must divide the batch size


@dataclasses.dataclass(frozen=True)
class Config(ScholarConfig):
    z_dim: int = hparam(128, "size of the generator's latent code", ge=1)
    variant: str = hparam(
        "jr", "jr: joint retraining with replay; ra: replay alignment", choices=("jr", "ra")
    )
    ra_weight: float = hparam(1e-3, "weight of RA's alignment loss", ge=0)
    solver_steps: int = hparam(
        1, "solver steps an iteration, one on each of the first critic batches", ge=1
    )

    def check(self) -> None:
        super().check()
        if self.solver_steps > self.n_critic:
            raise ValueError(
                f"mergan solver_steps must be <= n_critic ({self.n_critic}), got "
                f"{self.solver_steps}: the solver takes one step on each of the first "
                "solver_steps critic batches"
            )


def sample_labels(key, mask, n):
    """`n` labels drawn uniformly from the classes in `mask` (class 0 while it is empty)."""
    logits = jnp.where(mask, 0.0, -jnp.inf)
    logits = jnp.where(mask.any(), logits, jnp.where(jnp.arange(mask.shape[0]) == 0, 0.0, -jnp.inf))
    return jax.random.categorical(key, logits, shape=(n,))


def replay_alignment(config: Config, p, state: ScholarState, on, b: int, g_params, key):
    """RA: ra_weight * sum ||G_t(z, c) - G_{t-1}(z, c)||^2 / 2 / (number of previous classes)
    on `b` codes and previous classes, pixels in [-1, 1]; 0 while nothing is replayed (`on`)."""
    k_z, k_y = jax.random.split(key)
    z, y = p.sample_z(k_z, b), sample_labels(k_y, state.seen, b)
    new = 2 * p.g_apply(g_params, z, y) - 1
    old = jax.lax.stop_gradient(2 * p.g_apply(state.prev_gen, z, y) - 1)
    n_prev = jnp.maximum(state.seen.sum(), 1)
    return jnp.where(on, config.ra_weight * 0.5 * jnp.sum((new - old) ** 2) / n_prev, 0.0)


def train_step(config: Config, parts: ScholarParts, state: ScholarState, batch, key):
    """The conditional critic and generator (JR: on real and replayed classes; RA: on real
    data plus the alignment loss), then `solver_steps` solver updates on real and replayed."""
    n_critic, solver_steps = config.n_critic, config.solver_steps
    k_aug, k_rz, k_ry, k_fy, k_gan = jax.random.split(key, 5)
    x = parts.input_fn(batch["x"], k_aug, True)
    p = parts.gans(x.shape[1:])
    real, real_y = chunks(x, n_critic), chunks(batch["y"], n_critic)
    b = real.shape[1]
    on = jnp.asarray(config.replay) & (state.has_prev > 0)
    r = jnp.where(on, state.ratio, 1.0)
    # JR's critic replays every chunk, RA's solver only the first solver_steps: the
    # draws are made for every chunk either way, so both variants see the same ones
    used = n_critic if config.variant == "jr" else solver_steps
    rep_y = chunks(sample_labels(k_ry, state.seen, n_critic * b), n_critic)[:used]
    rep_z = chunks(p.sample_z(k_rz, n_critic * b), n_critic)[:used]
    rep_x = p.g_apply(state.prev_gen, rep_z.reshape(used * b, -1), rep_y.reshape(-1))
    rep_x = jax.lax.stop_gradient(rep_x.reshape(used, b, *rep_x.shape[1:]))

    if config.variant == "jr":
        mixed = jnp.concatenate([real, rep_x], axis=1)
        mixed_y = jnp.concatenate([real_y, rep_y], axis=1)
        w = jnp.concatenate([jnp.full((n_critic, b), r), jnp.full((n_critic, b), 1 - r)], 1)
        learn = jnp.where(on, state.seen | state.current, state.current)
        n_fake, g_extra = 2 * b, None
    else:
        mixed, mixed_y, w = real, real_y, jnp.ones((n_critic, b))
        learn, n_fake = state.current, b
        g_extra = functools.partial(replay_alignment, config, p, state, on, b)

    gen, disc, metrics = gan_lib.critic_then_generator(
        state.gen,
        state.disc,
        mixed,
        w,
        k_gan,
        sample_z=lambda k: p.sample_z(k, n_fake),
        loss="wgan-gp",
        real_y_chunks=mixed_y,
        fake_labels=lambda k: sample_labels(k, learn, n_fake),
        g_extra=g_extra,
    )

    def solver_update(solver, xs):
        return scholar.solver_step(solver, *xs, r)

    k = solver_steps
    solver, s_loss = jax.lax.scan(
        solver_update, state.solver, (real[:k], real_y[:k], rep_x[:k], rep_y[:k])
    )
    return state.replace(solver=solver, gen=gen, disc=disc), {"loss": s_loss.mean(), **metrics}


def sample(config: Config, num_classes: int, state: ScholarState, key, per_class=8):
    """`per_class` samples of every class from the current generator, class-major."""
    y = jnp.repeat(jnp.arange(num_classes), per_class)
    z = jax.random.normal(key, (len(y), config.z_dim))
    return state.gen.apply_fn(state.gen.params, z, y), y


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """MeRGAN (`variant` 'jr' or 'ra') with a conditional `gan` (one of `gan.ARCHS`)."""
    config = configure(Config, config, overrides)
    num_classes = model.num_classes
    parts = scholar.scholar_parts(config, model, input_fn, gan_classes=num_classes)
    return Method(
        name="mergan",
        config=config,
        needs=Needs(last_batch="fill"),  # a step cuts the batch into n_critic equal chunks
        init=functools.partial(scholar.init, parts),
        train_step=functools.partial(train_step, config, parts),
        predict=functools.partial(scholar.solver_predict, parts),
        begin_task=functools.partial(scholar.begin_task, config, num_classes),
        end_task=scholar.end_task,
        host=HostHooks(sample=functools.partial(sample, config, num_classes)),
    )
