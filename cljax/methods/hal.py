"""Hindsight Anchor Learning (`hal`): Chaudhry et al., AAAI 2021 (arXiv 2002.08165), as the DER
paper ran it (Mammoth's `models/hal.py` of the paper's release, commit 7ab9db9).

A reservoir buffer as ER's, plus one *anchor* per class of each finished task:
an input that the network is about to forget, learned when its task ends. Each
step, from parameters `theta`:

1. `g_ce`, the gradient of the cross-entropy over the current batch and
   `minibatch_size` buffer items, and the tentative `theta' = theta - lr g_ce`;
2. once anchors exist, `g_anc`, the gradient at `theta` of
   `hal_lambda * mean (f_theta'(anchors) - f_theta(anchors))^2` (the anchors'
   outputs after the tentative step held fixed), and the step
   `theta - lr (g_ce + g_anc)` (Mammoth: the two gradients accumulate and SGD
   steps from `theta`);
3. `phi`, a running mean of the current batch's features: `phi = beta phi +
   (1 - beta) mean_n features(x_n)` (after the step).

At a task's end, `theta_t` the parameters, one SGD step on a batch of buffer
items (`task.batch_size`, Mammoth's `finetuning_epochs` = 1) gives `theta_m`;
for each class c of the task an anchor `e` starts uniform in [0, 1) (of the
network's input shape) and takes `anchor_steps` SGD steps at `lr` maximising
the forgetting `CE(f_theta_m(e), c) - CE(f_theta_t(e), c)` minus
`gamma |features_theta_t(e) - phi|^2` (the paper's eq. 6: an input whose loss
rises most after further training, kept near the mean feature).

Where this deviates from Mammoth, and why:
- Mammoth builds its buffer in "ring" mode, but its `add_data` always uses
  reservoir sampling and its ring reset never fires: the buffer is a reservoir,
  as here.
- The anchors live in the network's input space (after the input transform, as
  Mammoth's), `(num_tasks * classes of the first task, ...)` slots sized when the
  first task begins.
- BatchNorm (none in the MNIST MLP). The step's batch runs in training mode, as
  Mammoth's; its two passes over the anchors (at `theta'` and `theta`) and the
  features that update `phi` run in inference mode with the running statistics
  of after the batch, moving nothing. Mammoth (5dc82be `models/hal.py:149, 152,
  158`) runs all three in training mode: the anchors normalised by their own
  batch's statistics, the batch's features by theirs, each pass moving the
  running statistics. Matching it needs a BatchNorm that leaves the empty
  anchor slots out of the statistics (not done). At a task's end Mammoth learns
  each anchor through its `spare_model` in training mode, the anchor alone in
  its batch and normalised by its own statistics (`:87, 93, 98`); ours use the
  network's running statistics, in inference mode. The fine-tuning step before
  them is in training mode in both.
- While the buffer holds fewer than `minibatch_size` items, the replayed part of
  the step's batch is padded with repeats of weight 0 (Mammoth draws the items
  there are, none while it is empty): the same loss, and the repeats stay out of
  BatchNorm's batch statistics (`resnet18`'s `mask`), as in Mammoth's forward.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax.core import buffer as buffer_lib
from cljax.core.config import hparam
from cljax.methods import Method, TaskInfo, configure
from cljax.methods.common import (
    NetState,
    ReplayConfig,
    create_net,
    cross_entropy,
    forward,
    masked_mean,
    mixed_batch,
    penultimate,
    predict_with,
    replay_batch,
)

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4, "anchor_steps": 3}


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    minibatch_size: int = hparam(128, "buffer items replayed per step", ge=1)
    hal_lambda: float = hparam(0.1, "weight of the anchors' output-change penalty", ge=0)
    beta: float = hparam(0.5, "decay of the running mean feature phi", ge=0, le=1)
    gamma: float = hparam(0.1, "weight of the anchors' distance to phi", ge=0)
    anchor_steps: int = hparam(100, "SGD steps that learn each anchor", ge=1)


@struct.dataclass
class HalState:
    net: NetState
    buffer: buffer_lib.Buffer
    anchors: jax.Array  # (A, *input shape) in the network's input space
    anchor_valid: jax.Array  # (A,)
    phi: jax.Array  # (D,) running mean feature


def learn_anchors(
    config: Config, features, net: NetState, theta_t, theta_m, phi, classes, key, shape
):
    """One anchor per class of `classes` (an array): `anchor_steps` SGD steps from U[0, 1)
    maximising the forgetting minus `gamma |features - phi|^2`."""

    def objective(e, c, params_m, params_t):
        e = e[None]
        after = cross_entropy(forward(net, params_m, e, net.batch_stats, train=False)[0], c[None])
        before = cross_entropy(forward(net, params_t, e, net.batch_stats, train=False)[0], c[None])
        near = config.gamma * jnp.sum((features(params_t, net.batch_stats, e) - phi) ** 2)
        return jnp.sum(after) - jnp.sum(before) - near  # maximised

    def one(c, k):
        def step(e, _):
            return e + config.lr * jax.grad(objective)(e, c, theta_m, theta_t), None

        e0 = jax.random.uniform(k, shape)
        return jax.lax.scan(step, e0, None, length=config.anchor_steps)[0]

    return jax.vmap(one)(classes, jax.random.split(key, classes.shape[0]))


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """HAL with SGD at `lr`, a reservoir of `buffer_size`, anchor weight `hal_lambda`."""
    config = configure(Config, config, overrides)
    tx = optax.sgd(config.lr)
    features = penultimate(model)

    def init(key, example_x):
        x = input_fn(example_x, key, False)
        net = create_net(model, tx, key, x)
        example = {"x": example_x[0], "y": jnp.zeros((), jnp.int32)}
        dim = features(net.params, net.batch_stats, x).shape[-1]
        return HalState(
            net=net,
            buffer=buffer_lib.init(config.buffer_size, example),
            anchors=jnp.zeros((1, *x.shape[1:]), jnp.float32),
            anchor_valid=jnp.zeros(1, bool),
            phi=jnp.zeros(dim, jnp.float32),
        )

    def begin_task(state: HalState, task: TaskInfo, key) -> HalState:
        """Anchor slots for every class of every task (when the first begins)."""
        del key
        if task.index > 0:
            return state
        if task.num_tasks < 1:
            raise ValueError("hal needs the number of tasks (TaskInfo.num_tasks)")
        slots = task.num_tasks * len(task.classes)
        return state.replace(
            anchors=jnp.zeros((slots, *state.anchors.shape[1:]), jnp.float32),
            anchor_valid=jnp.zeros(slots, bool),
        )

    def train_step(state: HalState, batch, key):
        k_cur, k_buf, k_add = jax.random.split(key, 3)
        net = state.net
        x, y, weight = mixed_batch(state, batch, k_cur, k_buf, config.minibatch_size, input_fn)
        cur = x[: batch["y"].shape[0]]

        def ce_fn(params):
            logits, stats = forward(net, params, x, net.batch_stats, weight=weight)
            return masked_mean(cross_entropy(logits, y), weight), stats

        (ce, stats), g_ce = jax.value_and_grad(ce_fn, has_aux=True)(net.params)
        tentative = jax.tree.map(lambda p, g: p - config.lr * g, net.params, g_ce)
        anchors, live = state.anchors, state.anchor_valid.astype(jnp.float32)
        target, _ = forward(net, tentative, anchors, stats, train=False)
        target = jax.lax.stop_gradient(target)

        def anchor_fn(params):
            out, _ = forward(net, params, anchors, stats, train=False)
            per_anchor = jnp.mean((target - out) ** 2, axis=-1)
            return config.hal_lambda * masked_mean(per_anchor, live)

        g_anc = jax.grad(anchor_fn)(net.params)
        grads = jax.tree.map(lambda a, b: a + b, g_ce, g_anc)
        net = net.apply_gradients(grads=grads, batch_stats=stats)
        mean_feature = jnp.mean(features(net.params, net.batch_stats, cur), axis=0)
        phi = config.beta * state.phi + (1 - config.beta) * mean_feature
        new_buffer = buffer_lib.add(state.buffer, {"x": batch["x"], "y": batch["y"]}, k_add)
        return state.replace(net=net, buffer=new_buffer, phi=phi), {"loss": ce}

    def end_task(state: HalState, task: TaskInfo, task_data, key) -> HalState:
        """Anchors for the task's classes, from one step of fine-tuning on the buffer."""
        del task_data
        k_ft, k_anchor = jax.random.split(key)
        net = state.net
        mem_x, mem, valid = replay_batch(state, k_ft, task.batch_size or 32, input_fn)

        def ce_fn(params):
            logits, _ = forward(net, params, mem_x, net.batch_stats)
            return masked_mean(cross_entropy(logits, mem["y"]), valid)

        theta_m = jax.tree.map(
            lambda p, g: p - config.lr * g, net.params, jax.grad(ce_fn)(net.params)
        )
        classes = jnp.asarray(task.classes, jnp.int32)
        shape = state.anchors.shape[1:]
        new = learn_anchors(
            config, features, net, net.params, theta_m, state.phi, classes, k_anchor, shape
        )
        first = task.index * len(task.classes)
        if first + len(task.classes) > state.anchors.shape[0]:
            raise ValueError("hal: tasks with more classes than the first are not supported")
        anchors = jax.lax.dynamic_update_slice_in_dim(state.anchors, new, first, 0)
        valid_anchors = state.anchor_valid.at[first : first + len(task.classes)].set(True)
        return state.replace(anchors=anchors, anchor_valid=valid_anchors)

    return Method(
        name="hal",
        config=config,
        init=init,
        train_step=train_step,
        predict=predict_with(input_fn),
        begin_task=begin_task,
        end_task=end_task,
    )
