"""Gradient Episodic Memory (`gem`): Lopez-Paz & Ranzato, NeurIPS 2017 (arXiv 1706.08840), as
the DER paper ran it (Mammoth's `models/gem.py` of the paper's release, commit 7ab9db9).

An episodic memory of `buffer_size // num_tasks` items per task (drawn at random
from the task's un-augmented training data when it ends). Each step computes the
gradient `g` of the current batch's cross-entropy and, for every earlier task
k, the gradient `g_k` of the cross-entropy of its memory. If any `g . g_k < 0`
(the step would raise a past task's loss), `g` is replaced by the solution of
the paper's QP in its dual form (eq. 11-13), as Mammoth's `project2cone2`:

    v* = argmin_{v >= gamma} 0.5 v'(G G' + eps I) v + (G g)' v,     g~ = G' v* + g

with `G` the rows `g_k`, `gamma` the margin (the paper's, and Mammoth's
`--gamma`) and `eps` = 1e-3 Mammoth's ridge. The QP is solved inside the jitted
step by the exact active-set method of `cljax/core/qp.py` (quadprog in Mammoth); the
projected `g~` then satisfies `G g~ >= -eps v*` (tested, with the optimum
checked against a brute-force solve).

One backward pass per earlier task a step, each over that task's whole memory:
GEM is slow by nature (Mammoth does the same work). The memory is a
`(num_tasks, per_task)` array, sized when the first task begins; a task with no
memory yet costs nothing (`lax.cond`).

Every forward pass runs in training mode, in Mammoth's order (5dc82be
`models/gem.py:134-146`): first each earlier task's memory, then the current
batch, each normalised by its own BatchNorm statistics and each moving the
running statistics in turn (the gradients do not depend on the running ones).

Where this deviates from Mammoth, and why:
- The QP runs in float32 (Mammoth: float64 in quadprog); the constraints then
  hold to float32 rounding of `G g~` (about 1e-6 of its scale).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from cljax.core import qp
from cljax.core.config import Hyperparams, hparam
from cljax.methods import Method, TaskInfo, configure
from cljax.methods.common import (
    NetState,
    ce_and_grads,
    create_net,
    cross_entropy,
    forward,
    per_task_share,
    predict_with,
)

TEST_CONFIG = {"buffer_size": 8}
EPS = 1e-3  # Mammoth's ridge on the dual's matrix


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    """Settings of `gem`."""

    lr: float = hparam(0.1, "SGD step size", gt=0)
    buffer_size: int = hparam(500, "episodic memory items, split evenly over the tasks", ge=1)
    gamma: float = hparam(0.5, "margin of the dual's bound, v >= gamma", ge=0)


@struct.dataclass
class GemState:
    """The network and the episodic memory, `(num_tasks, per_task, ...)`, with the tasks
    that have one."""

    net: NetState
    mem_x: jax.Array
    mem_y: jax.Array
    stored: jax.Array  # (num_tasks,) bool


def project(g, G, stored, gamma: float, eps: float = EPS):
    """GEM's projection of the flat gradient `g` (P,) against the rows `G` (T, P) of the
    tasks in `stored`; `g` itself when no stored row has a negative dot product."""
    dots = G @ g
    violated = (stored & (dots < 0)).any()
    Q = G @ G.T + eps * jnp.eye(G.shape[0], dtype=G.dtype)
    v = qp.solve(Q, dots, jnp.full(G.shape[0], gamma, G.dtype), stored)
    return jnp.where(violated, g + v @ G, g)


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """GEM with SGD at `lr`, `buffer_size` memory items and margin `gamma`."""
    config = configure(Config, config, overrides)
    tx = optax.sgd(config.lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        x = jnp.zeros((1, 1, *example_x.shape[1:]), example_x.dtype)
        return GemState(net, x, jnp.zeros((1, 1), jnp.int32), jnp.zeros(1, bool))

    def begin_task(state: GemState, task: TaskInfo, key) -> GemState:
        """The memory sized for `num_tasks` tasks (when the first begins)."""
        if task.index > 0:
            return state
        per_task = per_task_share("gem", config.buffer_size, task)
        shape = (task.num_tasks, per_task, *state.mem_x.shape[2:])
        return state.replace(
            mem_x=jnp.zeros(shape, state.mem_x.dtype),
            mem_y=jnp.zeros(shape[:2], jnp.int32),
            stored=jnp.zeros(task.num_tasks, bool),
        )

    def train_step(state: GemState, batch, key):
        """Each stored task's memory gradient, then the batch's, projected; the running
        BatchNorm statistics moved by each of those passes in that order (Mammoth's)."""
        k_cur, k_mem = jax.random.split(key)
        net = state.net
        flat = ravel_pytree(net.params)[0]

        def task_grad(stats, args):
            mx, my, ok, k = args

            def grad(stats):
                xb = input_fn(mx, k, True)

                def fn(p):
                    logits, new_stats = forward(net, p, xb, stats)
                    return cross_entropy(logits, my).mean(), new_stats

                g_k, stats = jax.grad(fn, has_aux=True)(net.params)
                return stats, ravel_pytree(g_k)[0]

            return jax.lax.cond(ok, grad, lambda s: (s, jnp.zeros_like(flat)), stats)

        keys = jax.random.split(k_mem, state.stored.shape[0])
        stats, G = jax.lax.scan(
            task_grad, net.batch_stats, (state.mem_x, state.mem_y, state.stored, keys)
        )
        net_m = net.replace(batch_stats=stats)
        loss, stats, grads = ce_and_grads(net_m, input_fn(batch["x"], k_cur, True), batch["y"])
        g, unravel = ravel_pytree(grads)
        new_g = project(g, G, state.stored, config.gamma)
        net = net.apply_gradients(grads=unravel(new_g), batch_stats=stats)
        return state.replace(net=net), {"loss": loss}

    def end_task(state: GemState, task: TaskInfo, task_data, key) -> GemState:
        """`per_task` random items of the task into its row of the memory."""
        x, y = task_data
        per_task = state.mem_x.shape[1]
        pick = jax.random.permutation(key, y.shape[0])[:per_task]
        return state.replace(
            mem_x=state.mem_x.at[task.index].set(x[pick].astype(state.mem_x.dtype)),
            mem_y=state.mem_y.at[task.index].set(y[pick].astype(jnp.int32)),
            stored=state.stored.at[task.index].set(True),
        )

    return Method(
        name="gem",
        config=config,
        init=init,
        train_step=train_step,
        predict=predict_with(input_fn),
        begin_task=begin_task,
        end_task=end_task,
    )
