"""Elastic Weight Consolidation (`ewc`): Kirkpatrick et al., PNAS 2017, in its original
("offline") form, as van de Ven, Tuytelaars and Tolias run it ("Three types of incremental
learning", Nature Machine Intelligence 2022; GMvandeVen/continual-learning e6d795a,
`models/cl/continual_learner.py`, `--ewc`: `estimate_fisher`, `ewc_loss`).

After each task `t` the diagonal Fisher information `F_t` of the task's training data is
computed and kept with the parameters `theta_t` as that task's own penalty term; every later
step minimises

    CE(f(x), y) + ewc_lambda / 2 * sum_t sum_i F_t,i (theta_i - theta_t,i)^2

with Adam (or SGD: `optimizer`). `ewc_on` is the online form (one running Fisher, one anchor:
Schwarz et al., as Mammoth and the DER paper run it).

The Fisher is that code's default estimate (`fisher_labels='all'`, `fisher_batch=1`, a full
pass): per training item, in inference mode and on the un-augmented item, the squared
gradient of `log p(c | x)` for every output `c`, weighted by the predicted `p(c | x)` (the
expected Fisher, not the empirical one); over the outputs the task trains (every output, or
the item's task head with `task_heads`). `fisher_labels="true"` takes the item's own label
only (the "empirical" Fisher). The sum is divided by `n - 1` for `n` items, as that code
divides by the last index of its batch-size-1 loader.

The penalty is kept as two sums, `A = sum_t F_t` and `B = sum_t F_t theta_t`, its gradient
`ewc_lambda (A theta - B)`: the gradient of the per-task sum above, whatever the number of
tasks, in constant memory (it differs from summing the terms task by task only in float
rounding). As in `ewc_on` and SI, the reported loss is the cross-entropy alone.

As there, no Fisher is estimated after the last task (when `TaskInfo.num_tasks` says which
it is; a user's loop that leaves it 0 gets one, which nothing uses). Where this deviates from
that code: nothing known.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from cljax.core.config import Hyperparams, hparam
from cljax.methods import Method, TaskInfo, configure
from cljax.methods.common import (
    TASK_HEADS_DOC,
    NetState,
    ce_and_grads,
    create_net,
    forward,
    on_task_heads,
    optimizer,
    optimizer_hparam,
    predict_with,
)


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    """Settings of `ewc`."""

    lr: float = hparam(0.001, "step size", gt=0)
    optimizer: str = optimizer_hparam("adam")
    ewc_lambda: float = hparam(100.0, "weight of the penalty (the paper's lambda)", ge=0)
    fisher_labels: str = hparam(
        "all",
        "all: every output's squared log-likelihood gradient weighted by its predicted "
        "probability (the expected Fisher, that code's default); true: the item's label only",
        choices=("all", "true"),
    )
    task_heads: int = hparam(0, TASK_HEADS_DOC, ge=0)


@struct.dataclass
class EwcState:
    """The network and the penalty's sums over finished tasks: `A = sum_t F_t`,
    `B = sum_t F_t theta_t` (zero until the first task ends)."""

    net: NetState
    fisher_sum: dict
    anchored_sum: dict


def train_step(config: Config, input_fn, state: EwcState, batch, key):
    """One optimizer step on the cross-entropy plus the penalty, whose gradient is
    `ewc_lambda (A theta - B)`."""
    x = input_fn(batch["x"], key, True)
    loss, stats, grads = ce_and_grads(state.net, x, batch["y"], config.task_heads)
    grads = jax.tree.map(
        lambda g, a, p, b: g + config.ewc_lambda * (a * p - b),
        grads,
        state.fisher_sum,
        state.net.params,
        state.anchored_sum,
    )
    net = state.net.apply_gradients(grads=grads, batch_stats=stats)
    return state.replace(net=net), {"loss": loss}


def fisher(config: Config, input_fn, net: NetState, x_raw, y):
    """The diagonal Fisher of `net` on the items `(x_raw, y)`, summed over items one at a
    time (in inference mode, un-augmented) and divided by `n - 1`."""

    def item(total, inputs):
        x, label = inputs
        x = input_fn(x[None], None, False)

        def log_probs(params):
            logits, _ = forward(net, params, x, net.batch_stats, train=False)
            logits = on_task_heads(logits, label[None], config.task_heads)
            return jax.nn.log_softmax(logits[0])

        if config.fisher_labels == "true":
            grad = jax.grad(lambda p: log_probs(p)[label])(net.params)
            return jax.tree.map(lambda t, g: t + g**2, total, grad), None
        log_p, vjp = jax.vjp(log_probs, net.params)
        classes = jnp.arange(log_p.shape[0])
        if config.task_heads:  # the item's head only: the other outputs' weights are 0
            k = config.task_heads
            classes = (label // k) * k + jnp.arange(k)
        cotangents = jax.nn.one_hot(classes, log_p.shape[0], dtype=log_p.dtype)
        grads = jax.vmap(vjp)(cotangents)[0]  # d log p_c, each c
        weight = jnp.exp(jax.lax.stop_gradient(log_p[classes]))
        return jax.tree.map(
            lambda t, g: t + jnp.tensordot(weight, g**2, axes=1), total, grads
        ), None

    zeros = jax.tree.map(jnp.zeros_like, net.params)
    total, _ = jax.lax.scan(item, zeros, (x_raw, y))
    return jax.tree.map(lambda t: t / max(y.shape[0] - 1, 1), total)


def end_task(config: Config, input_fn, state: EwcState, task: TaskInfo, task_data, key):
    """The task's Fisher `F_t` joins the penalty with the current parameters as its anchor:
    `A += F_t`, `B += F_t theta`. Nothing after the last task (nothing trains with it)."""
    del key
    if task.num_tasks and task.index == task.num_tasks - 1:
        return state
    x, y = (jnp.asarray(a) for a in task_data)
    f_t = fisher(config, input_fn, state.net, x, y)
    params = state.net.params
    return state.replace(
        fisher_sum=jax.tree.map(jnp.add, state.fisher_sum, f_t),
        anchored_sum=jax.tree.map(lambda b, f, p: b + f * p, state.anchored_sum, f_t, params),
    )


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """Offline EWC with Adam (or SGD) at `lr` and penalty weight `ewc_lambda`."""
    config = configure(Config, config, overrides)
    tx = optimizer(config.optimizer, config.lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        zeros = jax.tree.map(jnp.zeros_like, net.params)
        return EwcState(net=net, fisher_sum=zeros, anchored_sum=zeros)

    return Method(
        name="ewc",
        config=config,
        init=init,
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
        end_task=lambda state, task, data, key: end_task(config, input_fn, state, task, data, key),
    )
