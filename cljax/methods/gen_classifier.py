"""The generative classifier (`gen_classifier`): one VAE per class, an input assigned to the
class under whose VAE it is most likely. van de Ven, Li and Tolias, "Class-incremental
learning with generative classifiers" (CVPR-W 2021), as the authors' code runs it in the
"Three types of incremental learning" comparison (GMvandeVen/continual-learning e6d795a,
`compare.py`'s Generative Classifier: `--gen-classifier`, `models/generative_classifier.py`,
`models/vae.py`, `train_gen_classifier`).

Nothing is replayed and nothing is regularised: a class's VAE trains on that class's items
only, so learning a new class cannot disturb an old one. Each VAE (`cljax.models.vae.CondVAE`
without classifier: `fc_layers - 1` ReLU layers of `fc_units`, a `z_dim` latent code, a
sigmoid decoder, the standard normal prior) minimises the binary cross-entropy (mean over
pixels) plus KL / pixels on its class's items, with an Adam of its own. The score of class c
for input x is the importance-sampling estimate of log p_c(x) from `eval_samples` samples of
q_c(z|x), with a Gaussian observation model of unit variance as the reference evaluates
(`estimate_lls`): log mean_s exp(log N(x; dec(z_s), I) + log N(z_s; 0, I) - log q(z_s|x)),
every log-density without its 2 pi constant (as the reference; they cancel across classes).
`eval_samples=0` is the reference's `S='mean'` (z = the encoder's mean).

Deviations:
- The reference trains the classes one after another, each for its own iterations of 128
  items of that class. Here a step takes the driver's batch of the task's items and trains
  each of the task's classes' VAEs on its own items of it (their mean loss; the other classes'
  VAEs are not computed), so a class's batch is its share
  of the task's batch (about 128 for the tuned row's 256 over two classes, varying with the
  draw) and the classes of a task train side by side; a VAE with no item in a batch keeps its
  parameters and its Adam's state unchanged.
- The importance samples at evaluation are drawn from a fixed key (`eval_seed`), the same for
  every batch: the scores are deterministic, as a pure `predict` must be.
- Random draws come from JAX's keys, not torch's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax.core.config import Hyperparams, hparam
from cljax.methods import CLASS_SPLIT_SETTINGS, HostHooks, Method, Needs, configure
from cljax.methods.common import flat_input
from cljax.models import vae

TEST_CONFIG = {"fc_units": 8, "z_dim": 2, "eval_samples": 3}


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    lr: float = hparam(1e-3, "each VAE's Adam learning rate (betas 0.9, 0.999)", gt=0)
    fc_units: int = hparam(85, "units of every hidden layer of a class's VAE", ge=1)
    fc_layers: int = hparam(3, "the reference's fc_lay: encoder layers + the latent layer", ge=2)
    z_dim: int = hparam(5, "latent units of a class's VAE", ge=1)
    eval_samples: int = hparam(
        50, "importance samples of each class's likelihood (0: the encoder's mean)", ge=0
    )
    eval_seed: int = hparam(0, "the fixed key of the importance samples", ge=0)


@struct.dataclass
class State:
    params: Any  # every class's VAE, stacked on a leading class axis
    opt: Any  # every class's Adam state, stacked the same way
    current: jax.Array  # the classes whose VAEs train now (the task's; all before any task)
    in_shape: tuple = struct.field(pytree_node=False, default=())


@dataclasses.dataclass(frozen=True)
class Parts:
    config: Config
    input_fn: Any
    num_classes: int
    tx: Any

    def net(self, in_features: int) -> vae.CondVAE:
        c = self.config
        return vae.plain(in_features, c.fc_units, c.fc_layers, c.z_dim)


def init(parts: Parts, key, example_x) -> State:
    """A VAE and an Adam per class, for inputs like `example_x`."""
    image = parts.input_fn(example_x, None, False)
    x = image.reshape((image.shape[0], -1))
    net = parts.net(x.shape[-1])
    eps = jnp.zeros((x.shape[0], parts.config.z_dim))
    keys = jax.random.split(key, parts.num_classes)
    params = jax.vmap(lambda k: net.init(k, x, eps)["params"])(keys)
    return State(
        params=params,
        opt=jax.vmap(parts.tx.init)(params),
        current=jnp.arange(parts.num_classes, dtype=jnp.int32),
        in_shape=tuple(image.shape[1:]),
    )


def vae_loss(net: vae.CondVAE, params, x, weights, key):
    """A VAE's mean over the items of nonzero `weights` of BCE (mean over pixels) + KL / pixels.

    The other items (other classes') enter as blank inputs, their terms selected away: another
    class's images can drive a VAE's log-variance to overflow, and a NaN there would reach the
    sum (0 x inf) and the gradient (the selection's zero times an infinite derivative)."""
    own = weights > 0
    per_item = vae.plain_loss(net, params, jnp.where(own[:, None], x, 0.0), key)
    return jnp.sum(jnp.where(own, weights * per_item, 0.0)) / jnp.maximum(jnp.sum(weights), 1.0)


def begin_task(state: State, task, key) -> State:
    """The task's classes are the ones whose VAEs train (a step computes those only)."""
    del key
    return state.replace(current=jnp.asarray(task.classes, jnp.int32))


def train_step(parts: Parts, state: State, batch, key):
    """Each current class's VAE one Adam step on its own items of the batch (none: unchanged)."""
    k_aug, key = jax.random.split(key)
    x = flat_input(parts.input_fn, batch["x"], k_aug, True)
    y = batch["y"]
    net = parts.net(x.shape[-1])
    classes = state.current
    weights = (y[None, :] == classes[:, None]).astype(jnp.float32)  # (K, B)
    keys = jax.random.split(key, classes.shape[0])
    take = lambda tree: jax.tree.map(lambda a: a[classes], tree)  # noqa: E731

    def one(params, opt, w, k):
        loss, grads = jax.value_and_grad(functools.partial(vae_loss, net))(params, x, w, k)
        updates, new_opt = parts.tx.update(grads, opt, params)
        new_params = optax.apply_updates(params, updates)
        has = jnp.sum(w) > 0
        keep = lambda new, old: jnp.where(has, new, old)  # noqa: E731
        return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_opt, opt), loss

    params, opt, losses = jax.vmap(one)(take(state.params), take(state.opt), weights, keys)
    put = lambda whole, part: jax.tree.map(lambda a, b: a.at[classes].set(b), whole, part)  # noqa: E731
    counts = weights.sum(1)
    loss = jnp.sum(losses * counts) / jnp.maximum(counts.sum(), 1.0)
    new = state.replace(params=put(state.params, params), opt=put(state.opt, opt))
    return new, {"loss": loss}


def log_likelihood(net: vae.CondVAE, params, x, eps):
    """The reference's `estimate_lls`: `(B,)` estimates of log p(x) from the importance samples
    `eps` `(S, B, z_dim)` (S = 0: the encoder's mean as the one sample)."""
    apply = functools.partial(net.apply, {"params": params})
    mu, logvar, _ = apply(x, method=vae.CondVAE.encode)

    def log_p_x_z(z):  # a Gaussian observation model of unit variance
        recon = apply(z, method=vae.CondVAE.decode)
        return jnp.sum(-0.5 * (x - recon) ** 2, axis=-1)

    if eps.shape[0] == 0:
        log_p_z = jnp.sum(-0.5 * mu**2, axis=-1)
        log_q = jnp.sum(-0.5 * logvar, axis=-1)
        return log_p_x_z(mu) + log_p_z - log_q

    def sample(e):
        z = mu + jnp.exp(0.5 * logvar) * e
        log_p_z = jnp.sum(-0.5 * z**2, axis=-1)
        return log_p_x_z(z) + log_p_z - vae.log_normal_diag(z, mu, logvar)

    lls = jax.lax.map(sample, eps)  # (S, B): one sample at a time keeps memory small
    return jax.nn.logsumexp(lls, axis=0) - jnp.log(eps.shape[0])


def predict(parts: Parts, state: State, x):
    """`(B, C)`: every class's log-likelihood estimate of each input (its score)."""
    x = flat_input(parts.input_fn, x, None, False)
    net = parts.net(x.shape[-1])
    c = parts.config
    key = jax.random.key(c.eval_seed)
    eps = jax.random.normal(key, (c.eval_samples, x.shape[0], c.z_dim))
    scores = jax.lax.map(lambda p: log_likelihood(net, p, x, eps), state.params)  # (C, B)
    return scores.T


def sample(parts: Parts, state: State, key, per_class=8):
    """`per_class` images from every class's VAE (z ~ N(0, I)), with their classes."""
    c = parts.config
    n = parts.num_classes
    net = parts.net(vae.input_size(jax.tree.map(lambda a: a[0], state.params)))
    z = jax.random.normal(key, (n, per_class, c.z_dim))
    images = jax.vmap(lambda p, zz: net.apply({"params": p}, zz, method=vae.CondVAE.decode))(
        state.params, z
    )
    y = jnp.repeat(jnp.arange(n), per_class)
    return images.reshape((n * per_class, *state.in_shape)), y


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """The generative classifier for the benchmark `model`'s number of classes (the backbone
    itself is not used: each class has its own VAE)."""
    config = configure(Config, config, overrides)
    tx = optax.adam(config.lr, b1=0.9, b2=0.999, eps=1e-8)
    parts = Parts(config=config, input_fn=input_fn, num_classes=model.num_classes, tx=tx)
    return Method(
        name="gen_classifier",
        config=config,
        # a VAE per class learns that class's items: a class-split benchmark's classes
        needs=Needs(settings=CLASS_SPLIT_SETTINGS),
        init=functools.partial(init, parts),
        train_step=functools.partial(train_step, parts),
        begin_task=begin_task,
        predict=functools.partial(predict, parts),
        host=HostHooks(sample=functools.partial(sample, parts)),
    )
