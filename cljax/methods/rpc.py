"""RPC (`rpc`): Pernici, Bruni, Baecchi, Turchini and Del Bimbo, *Class-incremental Learning
with Pre-allocated Fixed Classifiers*, ICPR 2020 (arXiv 2010.08657), on experience replay
with a class-balanced memory, as Mammoth runs it (`models/rpc.py`, tpami2023 ad4d390).

The classifier is fixed before any training to the vertices of a regular simplex, one a
class, pre-allocated for every class of the run: the scores are
`f(x)[:, :K-1] @ P`, `P` the `(K-1, K)` simplex (`cljax.models.heads.regular_simplex`),
`f` the backbone's K outputs of which the last is dropped. Loss: CE over the current batch
and `minibatch_size` replayed items together (one mean, one forward pass).

The memory, as Mammoth's `end_task`: after each task, the items of past classes are cut to
`buffer_size // classes seen` a class (the first ones in memory order, classes in label
order), and the room left is filled from a fresh shuffle of the task's training data with
an equal share per new class (the remainder to classes drawn at random): the first items
of each class in that order, raw. Nothing is stored during a task.

`train_through_polytope` (default, the paper): the loss is taken on the polytope's scores,
so only the features learn. Off: Mammoth's `observe` (rpc.py, tpami2023 and e75a491),
which trains the backbone's raw outputs with an ordinary cross-entropy and applies the
polytope only when predicting; its rows beside Mammoth's use that.

Deviations: Mammoth since f38f941 (2023) cuts the memory to `buffer_size // (t * classes
per task)` at the end of task t (it dropped the `+ 1` of the original), so that the second
task's classes never enter it; we keep the original. The draws come from JAX keys.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from cljax.core import buffer as buffer_lib
from cljax.core.config import hparam
from cljax.methods import CLASS_SPLIT_SETTINGS, Method, Needs, TaskInfo, configure
from cljax.methods.common import (
    ReplayConfig,
    ReplayState,
    cross_entropy,
    forward,
    masked_mean,
    mixed_batch,
    predict,
    replay_init,
)
from cljax.models.heads import regular_simplex

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    train_through_polytope: bool = hparam(
        True,
        "take the loss on the fixed polytope's scores (the paper); off: on the backbone's "
        "raw outputs, the polytope only at prediction (Mammoth's observe)",
    )


def polytope_scores(outputs, simplex):
    """The fixed classifier: the outputs' first K-1 entries times the simplex."""
    return outputs[:, :-1] @ simplex


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """ER with a fixed regular-polytope classifier (SGD at `lr`, `minibatch_size` replayed
    items a step) and Mammoth's class-balanced memory of `buffer_size`."""
    config = configure(Config, config, overrides)
    simplex = jnp.asarray(regular_simplex(model.num_classes))
    tx = optax.sgd(config.lr)

    def train_step(state: ReplayState, batch, key):
        k_cur, k_buf = jax.random.split(key)
        x, y, weight = mixed_batch(state, batch, k_cur, k_buf, config.minibatch_size, input_fn)

        def loss_fn(params):
            out, stats = forward(state.net, params, x, state.net.batch_stats, weight=weight)
            if config.train_through_polytope:
                out = polytope_scores(out, simplex)
            return masked_mean(cross_entropy(out, y), weight), stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.net.params)
        net = state.net.apply_gradients(grads=grads, batch_stats=stats)
        return state.replace(net=net), {"loss": loss}

    def end_task(state: ReplayState, task: TaskInfo, data, key):
        x, y = (jnp.asarray(a) for a in data)
        buffer = state.buffer
        if task.index > 0:
            per_class = config.buffer_size // len(task.seen)
            buffer = buffer_lib.keep_first_per_group(buffer, buffer.data["y"], per_class)
        items = {"x": x, "y": y}
        return state.replace(buffer=buffer_lib.fill_balanced(buffer, items, task.classes, key))

    def predict_fn(state: ReplayState, x):
        return polytope_scores(predict(state.net, input_fn(x, None, False)), simplex)

    return Method(
        name="rpc",
        needs=Needs(settings=CLASS_SPLIT_SETTINGS),  # no domain-IL, as Mammoth
        config=config,
        init=replay_init(model, tx, input_fn, config.buffer_size),
        train_step=train_step,
        end_task=end_task,
        predict=predict_fn,
    )
