"""Online Elastic Weight Consolidation (`ewc_on`): Schwarz et al., ICML 2018 (Progress &
Compress, its "online EWC"), as the DER paper ran it (Mammoth's `models/ewc_on.py`).

After each task the diagonal Fisher information of the task's training data is
added to a running one decayed by `gamma`, and the parameters are kept as the
anchor: `F <- gamma * F + F_t`, `theta* <- theta`. Each step minimises
`CE(f(x), y) + e_lambda * sum_i F_i (theta_i - theta*_i)^2`; as in Mammoth the
penalty's gradient is added in closed form (`2 e_lambda F (theta - theta*)`) and
the reported loss is the cross-entropy alone. `F` is zero before the first task
ends, so the first task is plain SGD.

The Fisher is Mammoth's estimate: per training item, the squared gradient of the
log-likelihood of its true label, weighted by that likelihood (detached),
`F_t = mean_n p(y_n | x_n) * (grad log p(y_n | x_n))^2`. The per-item gradients
are computed inside the compiled `end_task` and summed into the running total;
nothing returns to the host. By default one item at a time: on a 2-core CPU,
3,000 MNIST items take 0.26 s, against 7.1 s under `vmap` in chunks of 100
(XLA's batched matmuls with a contraction of one are slow there);
`fisher_chunk` > 1 vmaps that many at once, which may suit accelerators.

Where this deviates from Mammoth, and why:
- The mean is over the task's items. Mammoth divides the sum by
  `len(train_loader) * batch_size`, which exceeds the item count when the last
  batch is partial (60,032 for 60,000 Perm-MNIST items at batch 128: the Fisher
  is 0.05% larger here).
- The Fisher's forward pass runs the network in inference mode (BatchNorm's
  running statistics); Mammoth runs it in training mode on batches of one item.
  The MLP of the MNIST rows has no BatchNorm, so they are not affected.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax.config import Hyperparams, hparam
from cljax.methods import Method, TaskInfo, configure
from cljax.methods.common import (
    NetState,
    ce_and_grads,
    create_net,
    cross_entropy,
    forward,
    predict_with,
)

TEST_CONFIG = {"fisher_chunk": 8}


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    """Settings of `ewc_on`."""

    lr: float = hparam(0.03, "SGD step size", gt=0)
    e_lambda: float = hparam(90.0, "weight of the quadratic penalty (Mammoth's e_lambda)", ge=0)
    gamma: float = hparam(1.0, "decay of the running Fisher at each task's end", ge=0, le=1)
    fisher_chunk: int = hparam(
        1, "items whose Fisher terms are computed at once (1: one by one, fastest on CPU)", ge=1
    )


@struct.dataclass
class EwcState:
    """The network, the running diagonal Fisher and the anchor parameters."""

    net: NetState
    fisher: dict  # like net.params; zero until the first task ends
    anchor: dict  # like net.params: the parameters at the last task's end


def penalty_grads(config: Config, state: EwcState):
    """The penalty's gradient, `2 e_lambda F (theta - theta*)`."""
    return jax.tree.map(
        lambda f, p, a: 2.0 * config.e_lambda * f * (p - a),
        state.fisher,
        state.net.params,
        state.anchor,
    )


def train_step(config: Config, input_fn, state: EwcState, batch, key):
    """One SGD step on the cross-entropy plus the penalty's closed-form gradient."""
    x = input_fn(batch["x"], key, True)
    loss, stats, grads = ce_and_grads(state.net, x, batch["y"])
    grads = jax.tree.map(jnp.add, grads, penalty_grads(config, state))
    net = state.net.apply_gradients(grads=grads, batch_stats=stats)
    return state.replace(net=net), {"loss": loss}


def fisher(config: Config, input_fn, net: NetState, x_raw, y):
    """Mammoth's diagonal Fisher of `net` on the items `(x_raw, y)`: the mean over items of
    `p(y | x) * (grad log p(y | x))^2`, `fisher_chunk` items at a time."""
    n, chunk = y.shape[0], config.fisher_chunk
    pad = -n % chunk
    weight = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)])
    x_raw = jnp.concatenate([x_raw, jnp.zeros((pad, *x_raw.shape[1:]), x_raw.dtype)])
    y = jnp.concatenate([y, jnp.zeros(pad, y.dtype)])

    def log_likelihood(params, x, label):
        logits, _ = forward(net, params, x[None], net.batch_stats, train=False)
        return -cross_entropy(logits, label[None])[0]

    def one(x, label, w):
        log_p, grad = jax.value_and_grad(log_likelihood)(net.params, x, label)
        scale = w * jnp.exp(jax.lax.stop_gradient(log_p))
        return jax.tree.map(lambda g: scale * g**2, grad)

    def body(total, inputs):
        xc, yc, wc = inputs
        if chunk == 1:  # one item at a time: on CPU 28x faster than vmap over 100 items
            terms = one(input_fn(xc, None, False)[0], yc[0], wc[0])
            return jax.tree.map(jnp.add, total, terms), None
        terms = jax.vmap(one)(input_fn(xc, None, False), yc, wc)
        return jax.tree.map(lambda t, s: t + s.sum(0), total, terms), None

    shape = (-1, chunk)
    chunks = (
        x_raw.reshape(shape + x_raw.shape[1:]),
        y.reshape(shape),
        weight.reshape(shape),
    )
    zeros = jax.tree.map(jnp.zeros_like, net.params)
    total, _ = jax.lax.scan(body, zeros, chunks)
    return jax.tree.map(lambda t: t / n, total)


def end_task(config: Config, input_fn, state: EwcState, task: TaskInfo, task_data, key):
    """`F <- gamma F + F_t` on the task's training data; the anchor moves to the parameters."""
    del key, task
    x, y = task_data
    f_t = fisher(config, input_fn, state.net, x, y)
    running = jax.tree.map(lambda f, g: config.gamma * f + g, state.fisher, f_t)
    return state.replace(fisher=running, anchor=state.net.params)


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """Online EWC with SGD at `lr`, penalty weight `e_lambda` and Fisher decay `gamma`."""
    config = configure(Config, config, overrides)
    tx = optax.sgd(config.lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        zeros = jax.tree.map(jnp.zeros_like, net.params)
        return EwcState(net=net, fisher=zeros, anchor=net.params)

    return Method(
        name="ewc_on",
        config=config,
        init=init,
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
        end_task=lambda state, task, data, key: end_task(config, input_fn, state, task, data, key),
    )
