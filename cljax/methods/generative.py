"""Generative-replay machinery shared by DGR, MeRGAN and DGM.

- Losses: WGAN-GP (Gulrajani et al. 2017; penalty weight 10, one-sided
  interpolates between real and fake) and the non-saturating loss of Goodfellow
  et al. Both take per-sample weights for the real batch, so a real batch that
  mixes current data with replayed samples at a ratio r is the r-mixture
  distribution exactly, with shapes that do not depend on the task.
- `critic_then_generator`: `n_critic` discriminator updates (each on its own
  real chunk) then one generator update, one pure function (scanned inside a
  task like every `train_step`).
- `check_gan_hparams`, `check_run`, `chunks`: settings checks and batch splitting.

The scholar (solver + generator) that DGR and MeRGAN share is in `scholar.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from cljax.methods.common import cross_entropy
from cljax.models import gan as gan_models


def _wmean(v, w):
    return jnp.sum(v * w) / jnp.maximum(jnp.sum(w), 1e-8)


def discriminator_loss(
    d_params,
    d_apply,
    real,
    real_w,
    fake,
    key,
    *,
    loss: str,
    gp_weight: float = 10.0,
    real_y=None,
    ac_weight: float = 1.0,
    adv_w=None,
):
    """Critic loss on a weighted real batch and a fake batch (+ the AC-GAN term when labelled).

    `real_w` weights the real rows in every term; `adv_w`, when given, replaces it
    in the adversarial terms (and the gradient penalty), so rows with `adv_w = 0`
    (DGM's replayed images) teach the classifier head only.
    """
    adv_w = real_w if adv_w is None else adv_w
    adv_real, cls_real = d_apply(d_params, real)
    adv_fake, _ = d_apply(d_params, fake)  # the AC head learns from real images only
    if loss == "wgan-gp":
        value = jnp.mean(adv_fake) - _wmean(adv_real, adv_w)
        eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
        mixed = eps * real + (1 - eps) * fake

        def score(x):
            return d_apply(d_params, x[None])[0][0]

        grads = jax.vmap(jax.grad(score))(mixed)
        norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, -1) + 1e-12)
        value = value + gp_weight * _wmean((norms - 1.0) ** 2, adv_w)
    elif loss == "ns":
        value = _wmean(jax.nn.softplus(-adv_real), adv_w) + jnp.mean(jax.nn.softplus(adv_fake))
    else:
        raise ValueError(f"unknown GAN loss {loss!r}; choose 'wgan-gp' or 'ns'")
    if cls_real is not None and real_y is not None:
        # The auxiliary classifier learns from real (and replayed) images only, as in the
        # WGAN-GP AC-GAN the MeRGAN authors build on: trained on fakes as well, it can
        # learn the generator's label code instead of the classes, and the two collude.
        value = value + ac_weight * _wmean(cross_entropy(cls_real, real_y), real_w)
    return value


def generator_adv_loss(adv_fake, cls_fake=None, fake_y=None, *, loss: str, ac_weight=1.0):
    """Generator loss from the critic's outputs on generated samples."""
    value = -jnp.mean(adv_fake) if loss == "wgan-gp" else jnp.mean(jax.nn.softplus(-adv_fake))
    if cls_fake is not None and fake_y is not None:
        value = value + ac_weight * jnp.mean(cross_entropy(cls_fake, fake_y))
    return value


def critic_then_generator(
    g_state,
    d_state,
    real_chunks,
    real_w,
    key,
    *,
    sample_z: Callable,
    loss: str,
    real_y_chunks=None,
    fake_labels: Callable | None = None,
    g_extra: Callable[[Any, jax.Array], jax.Array] | None = None,
    generate: Callable | None = None,
    g_grads_fn: Callable | None = None,
    real_adv_w=None,
    gp_weight: float = 10.0,
    g_ac_weight: float = 1.0,
    d_ac_weight: float = 1.0,
):
    """`n_critic` critic updates (one per real chunk) then one generator update.

    Args:
      g_state, d_state: `TrainState`s of generator and discriminator.
      real_chunks: `(n_critic, B, ...)` real (or real+replayed) images.
      real_w: `(n_critic, B)` per-sample weights of the real chunks.
      sample_z: `key -> z (B, z_dim)`.
      real_y_chunks: `(n_critic, B)` labels (conditional GANs) or None.
      fake_labels: `key -> y (B,)` labels to generate (conditional GANs) or None.
      g_extra: `(g_params, key) -> scalar` added to the generator loss (e.g. replay
        alignment); None for nothing.
      generate: `(g_params, z, y) -> images` for the generator's updates (default
        `g_state.apply_fn`; DGM passes its masked generator of the current task).
      g_grads_fn: `grads -> grads` applied before the generator's update (DGM
        blocks the gradients of units earlier tasks use); None for none.
      real_adv_w: `(n_critic, B)` weights of the real rows in the adversarial
        terms only (`discriminator_loss`'s `adv_w`); None: `real_w`.
      gp_weight: the WGAN-GP penalty weight (10 in WGAN-GP, 1 in DGM's code).
      g_ac_weight: weight of the AC-GAN class term in the generator's loss (0: none).
      d_ac_weight: weight of the class term in the critic's loss (0: none; DGM trains its
        class head in steps of its own).
    Returns:
      `(g_state, d_state, metrics)` with the last critic loss and the generator loss.
    """
    conditional = fake_labels is not None
    generate = generate or g_state.apply_fn

    def critic_step(d_state, inp):
        real, w, aw, y, k = inp
        k_z, k_y, k_gp = jax.random.split(k, 3)
        fy = fake_labels(k_y) if conditional else None
        fake = jax.lax.stop_gradient(generate(g_state.params, sample_z(k_z), fy))
        d_loss, grads = jax.value_and_grad(discriminator_loss)(
            d_state.params,
            d_state.apply_fn,
            real,
            w,
            fake,
            k_gp,
            loss=loss,
            gp_weight=gp_weight,
            real_y=y if conditional else None,
            ac_weight=d_ac_weight,
            adv_w=aw,
        )
        return d_state.apply_gradients(grads=grads), d_loss

    n = real_chunks.shape[0]
    k_critic, k_gen, k_extra = jax.random.split(key, 3)
    ys = real_y_chunks if conditional else jnp.zeros(real_w.shape, jnp.int32)
    adv_ws = real_w if real_adv_w is None else real_adv_w
    d_state, d_losses = jax.lax.scan(
        critic_step, d_state, (real_chunks, real_w, adv_ws, ys, jax.random.split(k_critic, n))
    )

    def g_loss_fn(g_params):
        k_z, k_y = jax.random.split(k_gen)
        fy = fake_labels(k_y) if conditional else None
        fake = generate(g_params, sample_z(k_z), fy)
        adv, cls = d_state.apply_fn(d_state.params, fake)
        value = generator_adv_loss(adv, cls, fy, loss=loss, ac_weight=g_ac_weight)
        if g_extra is not None:
            value = value + g_extra(g_params, k_extra)
        return value

    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(g_state.params)
    if g_grads_fn is not None:
        g_grads = g_grads_fn(g_grads)
    g_state = g_state.apply_gradients(grads=g_grads)
    return g_state, d_state, {"d_loss": d_losses[-1], "g_loss": g_loss}


def adam(lr: float, b1: float, b2: float = 0.999):
    """The GAN optimizers of the papers: Adam with the given betas."""
    return optax.adam(lr, b1=b1, b2=b2)


def check_gan_hparams(n_critic, gan_loss, ratio, gan="mlp"):
    """Clear errors for generative-replay settings that cannot work."""
    gan_models.check_arch(gan)
    if not isinstance(n_critic, int) or n_critic < 1:
        raise ValueError(f"n_critic must be a positive int, got {n_critic!r}")
    if gan_loss not in ("wgan-gp", "ns"):
        raise ValueError(f"gan_loss must be 'wgan-gp' or 'ns', got {gan_loss!r}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1] (0: 1/t), got {ratio!r}")


def check_run(config, batch_size: int) -> None:
    """The `check_run` of a method whose steps split the batch into `config.n_critic` chunks."""
    if batch_size % config.n_critic:
        raise ValueError(
            f"batch_size {batch_size} must be a multiple of n_critic {config.n_critic} "
            "(each step uses n_critic real chunks)"
        )


def chunks(x, n):
    """`(n * B, ...) -> (n, B, ...)`."""
    return x.reshape((n, x.shape[0] // n, *x.shape[1:]))
