"""Experience Replay (`er`) with a reservoir buffer, as in Mammoth and the DER paper.

Each step concatenates the current batch with `minibatch_size` buffer items
and minimises the cross-entropy over the concatenation; then the current
(non-augmented) batch is offered to the reservoir.
Loss: CE([x; x_buf], [y; y_buf]).

While the buffer holds fewer than `minibatch_size` items (none, at first), the replayed
part is padded with slots of weight 0, one compiled shape for every step; they stay out
of the loss and of BatchNorm's batch statistics (`resnet18`'s `mask`), so a step equals
Mammoth's, which forwards the batch with the items there are
(`tests/test_torch_equivalence.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import optax

from cljax.core import buffer as buffer_lib
from cljax.methods import Method, configure
from cljax.methods.common import (
    ReplayConfig,
    ReplayState,
    cross_entropy,
    forward,
    masked_mean,
    mixed_batch,
    predict_with,
    replay_init,
    sgd_update,
)

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    pass


def train_step(config: Config, input_fn, state: ReplayState, batch, key):
    """CE over the current batch and `minibatch_size` replayed items; then reservoir insertion."""
    k_cur, k_buf, k_add = jax.random.split(key, 3)
    x, y, weight = mixed_batch(state, batch, k_cur, k_buf, config.minibatch_size, input_fn)

    def loss_fn(params):
        logits, stats = forward(state.net, params, x, state.net.batch_stats, weight=weight)
        return masked_mean(cross_entropy(logits, y), weight), (stats, None)

    net, loss, _ = sgd_update(state.net, loss_fn)
    new_buffer = buffer_lib.add(state.buffer, {"x": batch["x"], "y": batch["y"]}, k_add)
    return ReplayState(net=net, buffer=new_buffer), {"loss": loss}


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """ER with SGD at `lr`, a buffer of `buffer_size`, `minibatch_size` replayed items a step."""
    config = configure(Config, config, overrides)
    tx = optax.sgd(config.lr)

    return Method(
        name="er",
        config=config,
        init=replay_init(model, tx, input_fn, config.buffer_size),
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
    )
