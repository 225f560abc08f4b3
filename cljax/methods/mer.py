"""Meta-Experience Replay (`mer`): Riemer et al., ICLR 2019 (arXiv 1810.11910), as the DER
paper ran it (Mammoth's `models/mer.py` of the paper's release, commit 7ab9db9).

Each incoming item (batch size 1 in the paper and in every tuned row) is mixed
with `minibatch_size` reservoir-buffer items into each of `batch_num` batches
(the buffer's items first, the new item last). With `theta_A0` the parameters
before the step, for each batch, from `theta_W0` (the parameters before it):

- within the batch, SGD at `lr`: `inner="sample"` (the paper's Algorithm 1) one
  step per item, in order; `inner="batch"` (Mammoth, which the DER paper's MER
  row ran) one step on the batch's mean cross-entropy;
- the within-batch Reptile update `theta = theta_W0 + beta (theta - theta_W0)`;

then the new item is offered to the reservoir, and the across-batch Reptile
update `theta = theta_A0 + gamma (theta - theta_A0)` ends the step. `reptile`
is this update on any differentiable loss (tested against a hand-unrolled step
of a two-parameter model).

MER is slow by nature: one optimizer step per incoming item (and, with
`inner="sample"`, one per item of each batch).

Where this deviates from Mammoth, and why:
- `inner="sample"` is the default: it is the paper's algorithm; Mammoth's single
  step on the batch is `inner="batch"`, which the tuned rows of the DER paper's
  benchmarks set (its numbers come from it).
- Buffer items left out of a batch while the buffer holds fewer than
  `minibatch_size` (padding) count for nothing: no step in `inner="sample"`,
  weight 0 in the mean in `inner="batch"` (Mammoth draws only the stored ones).
- BatchNorm statistics are not updated by MER's steps (the MNIST MLP has none).
- The reported loss is the last batch's after the update.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from cljax.core import buffer as buffer_lib
from cljax.core.config import hparam
from cljax.methods import Method, configure
from cljax.methods.common import (
    ReplayConfig,
    ReplayState,
    cross_entropy,
    forward,
    masked_mean,
    predict_with,
    replay_batch,
    replay_init,
)

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    minibatch_size: int = hparam(128, "buffer items in each batch", ge=1)
    beta: float = hparam(1.0, "within-batch Reptile step (1: keep the SGD steps)", ge=0)
    gamma: float = hparam(1.0, "across-batch Reptile step (1: keep the batches' result)", ge=0)
    batch_num: int = hparam(1, "batches drawn for each incoming batch", ge=1)
    inner: str = hparam(
        "sample",
        "within-batch SGD: one step per item (the paper) or one on the batch (Mammoth)",
        choices=("sample", "batch"),
    )


def reptile(params, batches, grad_fn, lr: float, beta: float, gamma: float, inner: str):
    """MER's update of `params` over `batches` (a pytree whose leaves have leading axes
    `(batch_num, items, ...)`, with a 0/1 `"w"` leaf per item); `grad_fn(params, items)` is
    the gradient of the weighted mean loss of `items` (leading axis: items)."""
    start = params

    def sgd(p, items):
        return jax.tree.map(lambda a, g: a - lr * g, p, grad_fn(p, items))

    def one_batch(p, items):
        w0 = p
        if inner == "batch":
            p = sgd(p, items)
        else:

            def one_item(p, item):
                single = jax.tree.map(lambda a: a[None], item)
                return jax.tree.map(
                    lambda a, b: jnp.where(item["w"] > 0, a, b), sgd(p, single), p
                ), None

            p, _ = jax.lax.scan(one_item, p, items)
        return jax.tree.map(lambda a, b: b + beta * (a - b), p, w0), None

    params, _ = jax.lax.scan(one_batch, params, batches)
    return jax.tree.map(lambda a, b: b + gamma * (a - b), params, start)


def train_step(config: Config, input_fn, state: ReplayState, batch, key):
    """The MER update on `batch_num` batches mixing buffer items with the incoming ones; then
    the incoming items offered to the reservoir."""
    k_draw, k_cur, k_add = jax.random.split(key, 3)
    net = state.net
    x = input_fn(batch["x"], k_cur, True)
    n = batch["y"].shape[0]

    def draw(k):
        buf_x, buf, valid = replay_batch(state, k, config.minibatch_size, input_fn)
        return {
            "x": jnp.concatenate([buf_x, x]),
            "y": jnp.concatenate([buf["y"], batch["y"]]),
            "w": jnp.concatenate([valid, jnp.ones(n)]),
        }

    batches = jax.vmap(draw)(jax.random.split(k_draw, config.batch_num))

    def loss(params, items):
        logits, _ = forward(net, params, items["x"], net.batch_stats)
        return masked_mean(cross_entropy(logits, items["y"]), items["w"])

    params = reptile(
        net.params,
        batches,
        jax.grad(loss),
        config.lr,
        config.beta,
        config.gamma,
        config.inner,
    )
    last = jax.tree.map(lambda a: a[-1], batches)
    metrics = {"loss": loss(params, last)}
    buffer = buffer_lib.add(state.buffer, {"x": batch["x"], "y": batch["y"]}, k_add)
    return ReplayState(net=net.replace(params=params, step=net.step + 1), buffer=buffer), metrics


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """MER with SGD at `lr`, Reptile steps `beta` and `gamma`, a reservoir of `buffer_size`."""
    config = configure(Config, config, overrides)
    tx = optax.sgd(config.lr)

    return Method(
        name="mer",
        config=config,
        init=replay_init(model, tx, input_fn, config.buffer_size),
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
    )
