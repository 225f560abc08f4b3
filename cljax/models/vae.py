"""Variational auto-encoders as van de Ven et al. build them (GMvandeVen/continual-learning,
`models/vae.py`, `models/cond_vae.py`, `models/fc/`), the shared pieces of `bir` and the VAE
generators of generative replay.

- `CondVAE`: an MLP encoder (`fc_layers - 1` ReLU layers of `fc_units`), a linear layer to
  the latent mean and one without bias to its log-variance, optionally a linear classifier
  on the encoder's top ("replay through feedback": one network classifies and generates),
  and a decoder from the latent code back through `fc_layers - 1` hidden ReLU layers to the
  input, whose hidden layers can be gated by fixed random masks (`gate_masks`), one row per
  class or task. With `modes` > 0 the prior is a mixture of Gaussians with learned means
  and log-variances (one mode per class: BI-R's conditional prior).
- Losses as that code computes them, per item: `recon_bce` / `recon_mse` averaged over the
  input's elements, `kl_standard`, `log_normal_diag` (no 2*pi constant, as the reference:
  it cancels in every difference taken here) and `log_prior_gmm`.

Every layer starts as PyTorch's `nn.Linear` does (U(+-1/sqrt(fan_in)) weights and biases);
the mixture's means and log-variances N(0, 1), as the reference's `normal_()`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cljax.models.backbones import TorchDense


class CondVAE(nn.Module):
    """Encoder, latent code, optional classifier and (optionally gated) decoder.

    Methods (each usable with `apply(..., method=...)`): `encode(x) -> (mu, logvar, h)`,
    `classify(x) -> logits`, `decode(z, gates) -> reconstruction` and
    `__call__(x, eps, gates) -> (recon, logits, mu, logvar, z)`, `x` flat `(B, in_features)`.
    `gates` is a tuple of `(B, fc_units)` multipliers, one per gated decoder layer (see
    `gated_layers`), or None for an ungated decoder."""

    in_features: int
    num_classes: int = 0  # 0: no classifier (a plain generator)
    fc_units: int = 400
    fc_layers: int = 3
    z_dim: int = 100
    modes: int = 0  # Gaussian mixture prior's modes (0: the standard normal prior)
    output: str = "sigmoid"  # the decoder's last non-linearity: "sigmoid" or "none"

    def setup(self):
        if self.fc_layers < 2:
            raise ValueError(
                f"CondVAE needs fc_layers >= 2 (an encoder layer), got {self.fc_layers}"
            )
        if self.output not in ("sigmoid", "none"):
            raise ValueError(f"CondVAE output must be sigmoid or none, got {self.output!r}")
        hidden = self.fc_layers - 1
        self.enc = [TorchDense(self.fc_units) for _ in range(hidden)]
        self.to_mu = TorchDense(self.z_dim)
        self.to_logvar = TorchDense(self.z_dim, use_bias=False)
        if self.num_classes:
            self.head = TorchDense(self.num_classes)
        # fromZ, then fcD's hidden layers, then its output layer (never gated)
        self.dec = [TorchDense(self.fc_units) for _ in range(hidden)] + [
            TorchDense(self.in_features)
        ]
        if self.modes:
            init = nn.initializers.normal(1.0)
            self.prior_mu = self.param("prior_mu", init, (self.modes, self.z_dim))
            self.prior_logvar = self.param("prior_logvar", init, (self.modes, self.z_dim))

    def features(self, x):
        for layer in self.enc:
            x = nn.relu(layer(x))
        return x

    def encode(self, x):
        h = self.features(x)
        return self.to_mu(h), self.to_logvar(h), h

    def classify(self, x):
        return self.head(self.features(x))

    def decode(self, z, gates=None):
        h = z
        for i, layer in enumerate(self.dec[:-1]):
            h = layer(h)
            if gates is not None:
                h = h * gates[i]
            h = nn.relu(h)
        out = self.dec[-1](h)
        return jax.nn.sigmoid(out) if self.output == "sigmoid" else out

    def prior(self):
        """`(means, logvars)` of the mixture's modes, each `(modes, z_dim)`."""
        return self.prior_mu, self.prior_logvar

    def __call__(self, x, eps, gates=None):
        mu, logvar, h = self.encode(x)
        z = mu + jnp.exp(0.5 * logvar) * eps
        logits = self.head(h) if self.num_classes else None
        return self.decode(z, gates), logits, mu, logvar, z


@functools.cache
def plain(in_features: int, fc_units: int, fc_layers: int, z_dim: int) -> CondVAE:
    """A VAE without classifier or mixture prior (a generator, or one class's model), one
    instance per size so that states built by two calls have equal tree structures."""
    return CondVAE(in_features=in_features, fc_units=fc_units, fc_layers=fc_layers, z_dim=z_dim)


def input_size(params) -> int:
    """The input size of a `CondVAE` with parameters `params` (its decoder's output)."""
    last = max((k for k in params if k.startswith("dec_")), key=lambda k: int(k[4:]))
    return params[last]["dense"]["kernel"].shape[-1]


def gated_layers(fc_layers: int) -> int:
    """How many decoder layers a gate masks: every one but the output layer (`fc_layers - 1`)."""
    return fc_layers - 1


def gate_masks(key, rows: int, fc_units: int, fc_layers: int, prop: float):
    """Fixed random masks of the gated decoder layers: a tuple of `(rows, fc_units)` arrays of
    0/1, each entry 0 with probability `prop` (the reference's `fc_layer_fixed_gates`:
    `np.random.choice([0, 1], p=[prop, 1 - prop])`), one row per class or task."""
    keys = jax.random.split(key, gated_layers(fc_layers))
    return tuple(
        jax.random.bernoulli(k, 1.0 - prop, (rows, fc_units)).astype(jnp.float32) for k in keys
    )


def gates_of(masks: Sequence, gate_input):
    """The multipliers of each gated layer for `gate_input` `(B, rows)` (one-hot, or a
    distribution over classes as the reference feeds replayed items): `gate_input @ mask`."""
    return tuple(gate_input @ m for m in masks)


# ---------------------------------------------------------------- losses (per item)


def _clamped_log(ok, value, safe):
    """`max(value(p), -100)` where `ok`, else -100 (`F.binary_cross_entropy`'s clamp), where
    `value` is evaluated at `safe` (p where `ok`, a harmless stand-in elsewhere): a float32
    sigmoid saturates to exactly 0 or 1, and there `log`'s infinite derivative times the
    clamp's zero would be a NaN gradient."""
    return jnp.where(ok, jnp.maximum(value(safe), -100.0), -100.0)


def recon_bce(x, recon):
    """Binary cross-entropy averaged over the elements, as `F.binary_cross_entropy` (its
    logarithms clamped at -100; where a probability is exactly 0 or 1 its gradient is 0)."""
    above, below = recon > 0, recon < 1
    log_p = _clamped_log(above, jnp.log, jnp.where(above, recon, 0.5))
    log_1mp = _clamped_log(below, lambda p: jnp.log1p(-p), jnp.where(below, recon, 0.5))
    return -jnp.mean(x * log_p + (1.0 - x) * log_1mp, axis=-1)


def recon_mse(x, recon):
    """Half the squared error averaged over the elements (the reference's
    `-log_Normal_standard(x, mean=recon, average=True)`)."""
    return jnp.mean(0.5 * (x - recon) ** 2, axis=-1)


def kl_standard(mu, logvar):
    """KL(q(z|x) || N(0, I)) in closed form, summed over the latent units."""
    return -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar), axis=-1)


def log_normal_diag(z, mean, logvar):
    """log N(z; mean, diag(exp(logvar))) summed over the last axis, without -0.5 log(2 pi)."""
    return jnp.sum(-0.5 * (logvar + (z - mean) ** 2 / jnp.exp(logvar)), axis=-1)


def log_prior_gmm(z, means, logvars, y=None, probs=None):
    """log p(z) under a mixture with one mode per class (means, logvars `(C, z_dim)`), as the
    reference's `calculate_log_p_z` with `per_class` and one mode a class:

    - `y` `(B,)` given: the log-density of the class's own mode;
    - `probs` `(B, C)` given: `log sum_c probs_c N(z; mode c)` (the replayed items' soft labels);
    - neither: the uniform mixture of all modes, `log (1/C) sum_c N(z; mode c)`.
    """
    a = log_normal_diag(z[:, None, :], means[None], logvars[None])  # (B, C)
    if y is not None:
        return jnp.take_along_axis(a, y[:, None], axis=1)[:, 0]
    if probs is not None:
        # the largest term among the modes the item may come from: the reference computes
        # over those modes only (a task's head in task-IL), and a mode of probability 0 must
        # not set the scale, or the sum underflows (XLA's CPU flushes the reference's 1e-40
        # clamp to 0: log 0, NaN gradients)
        live = probs > 0
        a_max = jnp.max(jnp.where(live, a, -jnp.inf), axis=1)
        a_max = jnp.where(jnp.isfinite(a_max), a_max, jnp.max(a, axis=1))
        e = jnp.exp(jnp.where(live, a, a_max[:, None]) - a_max[:, None])
        total = jnp.sum(probs * e, axis=1)
    else:
        a_max = jnp.max(a, axis=1)
        total = jnp.sum(jnp.exp(a - a_max[:, None]), axis=1) / means.shape[0]
    return jnp.log(jnp.maximum(total, jnp.finfo(total.dtype).tiny)) + a_max


def variational_loss(z, mu, logvar, prior=None, y=None, probs=None):
    """Per item: the closed-form KL to N(0, I) without a mixture `prior`, else the one-sample
    estimate `log q(z|x) - log p(z)` under it (the reference's `calculate_variat_loss`)."""
    if prior is None:
        return kl_standard(mu, logvar)
    return log_normal_diag(z, mu, logvar) - log_prior_gmm(z, *prior, y=y, probs=probs)


def plain_loss(net: CondVAE, params, x, key):
    """Per item, a plain VAE's (`plain`) loss on flat inputs `x` in [0, 1]: the binary
    cross-entropy (mean over the elements) + KL / the input's size, z drawn with `key` (the
    reference's `VAE.loss_function` before its batch mean)."""
    eps = jax.random.normal(key, (x.shape[0], net.z_dim))
    recon, _, mu, logvar, _ = net.apply({"params": params}, x, eps)
    return recon_bce(x, recon) + kl_standard(mu, logvar) / x.shape[-1]


def kd_loss(logits, target_logits, temperature: float):
    """Per item: cross-entropy of the softened targets against the softened logits, summed
    over classes, without the T^2 factor (the reference's `loss_fn_kd`, `norm=False`)."""
    targets = jax.nn.softmax(target_logits / temperature, axis=-1)
    return -jnp.sum(targets * jax.nn.log_softmax(logits / temperature, axis=-1), axis=-1)
