"""ER-ACE (`er_ace`): Caccia, Aljundi, Asadi, Tuytelaars, Pineau and Belilovsky, *New
Insights on Reducing Abrupt Representation Change in Online Continual Learning*, ICLR 2022
(arXiv 2104.05025), as Mammoth runs it (`models/er_ace.py`, e75a491).

Experience replay with the asymmetric cross-entropy: the incoming batch's loss sees only
the logits of the classes present in it and of the classes not yet reached, so new classes
do not push the past ones' logits down; the replayed items' loss sees every class. Loss:
CE(mask(f(x)), y) + CE(f(x_buf), y_buf), two means, two forward passes.

As Mammoth's `observe`: the columns kept for the incoming batch are its own classes and
every class at or above the largest label seen so far in any batch (the rest are set to
-1e9); task 0 is unmasked and replays nothing (`task_free` masks and replays from the
first step); the replay minibatch (`minibatch_size` items, fewer while the buffer holds
fewer) is drawn uniformly without replacement before the current batch is offered to the
reservoir, raw (unaugmented) inputs stored. With `use_custom_classifier` (Mammoth's
default) the backbone's output layer is replaced by a cosine classifier, 10 x
cos(features, w_c), no bias, torch's default initialisation (`cljax.models.heads.CosineHead`).

The not-yet-reached classes are those of larger label (Mammoth's classes are numbered in
task order; so are cljax's scenarios'): a user's loop whose tasks take classes out of label
order opens other columns than Mammoth would.

Mammoth passes the run's batch size as `minibatch_size` whatever is asked (main.py:431-436):
its tuned rows here say so. Deviations: nothing known (the replay draws come from JAX keys;
the ER-ACE authors' own code, on which Mammoth's is modelled, was not read).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax.core import buffer as buffer_lib
from cljax.core.config import hparam
from cljax.methods import CLASS_SPLIT_SETTINGS, Method, Needs, TaskInfo, configure
from cljax.methods.common import (
    NetState,
    ReplayConfig,
    create_net,
    cross_entropy,
    forward,
    masked_mean,
    predict_with,
    replay_batch,
)
from cljax.models.heads import CosineHead

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    task_free: bool = hparam(False, "mask and replay from the first step (no task boundaries)")
    use_custom_classifier: bool = hparam(
        True, "replace the backbone's output layer by Mammoth's cosine classifier (scale 10)"
    )


@struct.dataclass
class State:
    net: NetState
    buffer: buffer_lib.Buffer
    task: jax.Array  # index of the task being trained
    seen_max: jax.Array  # the largest label seen in any batch so far (-1: none)


def asymmetric_mask(labels, seen_max, num_classes: int):
    """`(num_classes,)`: True for the batch's own classes and every class >= `seen_max`."""
    present = jnp.zeros(num_classes, bool).at[labels].set(True)
    return present | (jnp.arange(num_classes) >= seen_max)


def train_step(config: Config, input_fn, state: State, batch, key):
    """Masked CE on the incoming batch, CE on a replayed minibatch; reservoir insertion."""
    k_cur, k_buf, k_add = jax.random.split(key, 3)
    x = input_fn(batch["x"], k_cur, True)
    buf_x, items, valid = replay_batch(state, k_buf, config.minibatch_size, input_fn)
    seen_max = jnp.maximum(state.seen_max, jnp.max(batch["y"]))
    after_first = (state.task > 0) | config.task_free
    valid = valid * after_first
    net = state.net

    def loss_fn(params):
        logits, stats = forward(net, params, x, net.batch_stats)
        keep = asymmetric_mask(batch["y"], seen_max, logits.shape[-1]) | ~after_first
        loss = cross_entropy(jnp.where(keep, logits, -1e9), batch["y"]).mean()
        out, stats = forward(net, params, buf_x, stats, active=jnp.any(valid > 0), weight=valid)
        loss = loss + masked_mean(cross_entropy(out, items["y"]), valid)
        return loss, stats

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    net = net.apply_gradients(grads=grads, batch_stats=stats)
    new_buffer = buffer_lib.add(state.buffer, {"x": batch["x"], "y": batch["y"]}, k_add)
    return state.replace(net=net, buffer=new_buffer, seen_max=seen_max), {"loss": loss}


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """ER-ACE with SGD at `lr`, a reservoir of `buffer_size` raw items, `minibatch_size`
    replayed items a step, Mammoth's cosine classifier unless `use_custom_classifier` is off."""
    config = configure(Config, config, overrides)
    if config.use_custom_classifier:
        if getattr(model, "num_classes", None) is None:
            raise ValueError(
                "er_ace's cosine classifier needs a backbone with a num_classes field that "
                "None turns into its features; or set use_custom_classifier=false"
            )
        model = CosineHead(dataclasses.replace(model, num_classes=None), model.num_classes)
    tx = optax.sgd(config.lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        example = {"x": example_x[0], "y": jnp.zeros((), jnp.int32)}
        return State(
            net=net,
            buffer=buffer_lib.init(config.buffer_size, example),
            task=jnp.zeros((), jnp.int32),
            seen_max=jnp.full((), -1, jnp.int32),
        )

    def begin_task(state: State, task: TaskInfo, key):
        del key
        return state.replace(task=jnp.asarray(task.index, jnp.int32))

    return Method(
        name="er_ace",
        needs=Needs(settings=CLASS_SPLIT_SETTINGS),  # no domain-IL, as Mammoth
        config=config,
        init=init,
        begin_task=begin_task,
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
    )
