"""Deep Generative Replay (`dgr`): Shin, Lee, Kim, Kim, NIPS 2017 (arXiv 1705.08690).

A scholar = (generator, solver). No real past data is kept: for task t > 1 the
generator learns the mixture of real current inputs and samples of the
previous generator, and the solver learns real current data plus replayed
inputs labelled by the previous solver. Loss of the solver:
r * CE(S(x), y) + (1 - r) * CE(S(x'), argmax S_prev(x')), x' ~ G_prev, r = 1/t.

Settings (`Config`): the solver is the benchmark's classifier trained with Adam
(`lr`, 1e-3 as in van de Ven's re-implementation); the generator is a WGAN-GP
(as the paper) with `n_critic` critic updates per generator update, Adam
(`g_lr` 1e-4, beta1 0, beta2 0.9), or the non-saturating loss (`gan_loss=ns`).
Each step consumes `n_critic` real chunks of the driver's batch (batch_size =
n_critic * chunk); the solver trains on the first chunk plus as many replayed
samples, once per step, so the solver and generator run the same number of
iterations per task. `soft_targets=true` replays the previous solver's softmax
instead of its argmax; `replay=false` turns replay off (a fine-tuning scholar).

The replayed inputs are labelled by the previous solver over the classes it has
learned (as van de Ven et al.'s re-implementation does: its argmax, or softmax,
never names a class not yet seen), run with its own frozen BatchNorm statistics.

Deviations: the generator makes images in the classifier's input space
(28x28 in [0, 1] for MNIST) rather than padded 32x32; the mixture of real and
replayed data is expressed by per-sample weights r and 1 - r in fixed-size
batches (so each task compiles once) rather than by drawing r of each batch.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from cljax.core.config import hparam
from cljax.methods import HostHooks, Method, Needs, configure, scholar
from cljax.methods import generative as gan_lib
from cljax.methods.common import forward
from cljax.methods.generative import chunks
from cljax.methods.scholar import ScholarConfig, ScholarParts, ScholarState

TEST_CONFIG = {"n_critic": 2, "z_dim": 8}
check_run = gan_lib.check_run  # n_critic must divide the batch size


@dataclasses.dataclass(frozen=True)
class Config(ScholarConfig):
    gan_loss: str = hparam("wgan-gp", "the generator's GAN loss", choices=("wgan-gp", "ns"))
    soft_targets: bool = hparam(
        False, "replay the previous solver's softmax (at `temperature`) instead of its argmax"
    )
    temperature: float = hparam(2.0, "softmax temperature of the soft targets", gt=0)


def replay_targets(config: Config, state: ScholarState, x):
    """The previous solver's labels of replayed inputs `x` (its argmax, or its softmax at
    `temperature` with `soft_targets`), over the classes it has learned only, computed with
    its own frozen BatchNorm statistics."""
    logits, _ = forward(state.solver, state.prev_solver, x, state.prev_stats, train=False)
    # before any task has ended there is nothing to replay (its weight 1 - r is 0); keep the
    # targets finite there
    logits = jnp.where(state.seen | ~state.seen.any(), logits, -jnp.inf)
    if config.soft_targets:
        return jax.nn.softmax(logits / config.temperature)
    return jnp.argmax(logits, -1)


def train_step(config: Config, parts: ScholarParts, state: ScholarState, batch, key):
    """Critic and generator on the r-mixture of real and replayed inputs, then the solver on the
    first real chunk plus as many replayed inputs labelled by the previous solver."""
    n_critic = config.n_critic
    k_aug, k_rep, k_gan = jax.random.split(key, 3)
    x = parts.input_fn(batch["x"], k_aug, True)
    p = parts.gans(x.shape[1:])
    real = chunks(x, n_critic)
    b = real.shape[1]
    r = jnp.where(config.replay, state.ratio, 1.0)
    replayed = p.g_apply(state.prev_gen, p.sample_z(k_rep, n_critic * b))
    replayed = jax.lax.stop_gradient(chunks(replayed, n_critic))
    mixed = jnp.concatenate([real, replayed], axis=1)
    weights = jnp.concatenate(
        [jnp.full((n_critic, b), r), jnp.full((n_critic, b), 1.0 - r)], axis=1
    )
    gen, disc, metrics = gan_lib.critic_then_generator(
        state.gen,
        state.disc,
        mixed,
        weights,
        k_gan,
        sample_z=lambda k: p.sample_z(k, 2 * b),
        loss=config.gan_loss,
    )
    targets = replay_targets(config, state, replayed[0])
    solver, s_loss = scholar.solver_step(
        state.solver, real[0], chunks(batch["y"], n_critic)[0], replayed[0], targets, r
    )
    new = state.replace(solver=solver, gen=gen, disc=disc)
    return new, {"loss": s_loss, **metrics}


def sample(config: Config, num_classes: int, state: ScholarState, key, per_class=8):
    """`num_classes * per_class` samples of the current generator (unconditional)."""
    z = jax.random.normal(key, (num_classes * per_class, config.z_dim))
    return state.gen.apply_fn(state.gen.params, z), None


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """DGR with a `gan` (one of `gan.ARCHS`) generator trained by `gan_loss`."""
    config = configure(Config, config, overrides)
    parts = scholar.scholar_parts(config, model, input_fn, gan_classes=0)
    return Method(
        name="dgr",
        config=config,
        needs=Needs(last_batch="fill"),  # a step cuts the batch into n_critic equal chunks
        init=functools.partial(scholar.init, parts),
        train_step=functools.partial(train_step, config, parts),
        predict=functools.partial(scholar.solver_predict, parts),
        begin_task=functools.partial(scholar.begin_task, config, model.num_classes),
        end_task=scholar.end_task,
        host=HostHooks(sample=functools.partial(sample, config, model.num_classes)),
    )
