"""Experience Replay (`er`) with a reservoir buffer, as in Mammoth and the DER paper.

Each step concatenates the current batch with `minibatch_size` buffer items
and minimises the cross-entropy over the concatenation; then the current
(non-augmented) batch is offered to the reservoir.
Loss: CE([x; x_buf], [y; y_buf]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from cljax import buffer as buffer_lib
from cljax.methods import Method, identity_begin, identity_end
from cljax.methods.common import (
    ReplayState,
    check_buffer_hparams,
    create_net,
    cross_entropy,
    forward,
    masked_mean,
    predict_with,
    replay_batch,
    sgd_update,
)

HPARAMS = {"lr": 0.1, "buffer_size": 500, "minibatch_size": 10}
ErState = ReplayState


def make(
    *,
    model,
    input_fn,
    lr: float = HPARAMS["lr"],
    buffer_size: int = HPARAMS["buffer_size"],
    minibatch_size: int = HPARAMS["minibatch_size"],
) -> Method:
    """ER with SGD at `lr`, a buffer of `buffer_size`, `minibatch_size` replayed items a step."""
    check_buffer_hparams(buffer_size, minibatch_size)
    tx = optax.sgd(lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        example = {"x": example_x[0], "y": jnp.zeros((), jnp.int32)}
        return ErState(net=net, buffer=buffer_lib.init(buffer_size, example))

    def train_step(state, batch, key):
        k_cur, k_buf, k_add = jax.random.split(key, 3)
        buf_x, buf, valid = replay_batch(state, k_buf, minibatch_size, input_fn)
        x = jnp.concatenate([input_fn(batch["x"], k_cur, True), buf_x])
        y = jnp.concatenate([batch["y"], buf["y"]])
        weight = jnp.concatenate([jnp.ones(batch["y"].shape[0]), valid])

        def loss_fn(params):
            logits, stats = forward(state.net, params, x, state.net.batch_stats)
            return masked_mean(cross_entropy(logits, y), weight), (stats, None)

        net, loss, _ = sgd_update(state.net, loss_fn)
        new_buffer = buffer_lib.add(state.buffer, {"x": batch["x"], "y": batch["y"]}, k_add)
        return ErState(net=net, buffer=new_buffer), {"loss": loss}

    return Method(
        name="er",
        init=init,
        begin_task=identity_begin,
        train_step=train_step,
        end_task=identity_end,
        predict=predict_with(input_fn),
        hparams={"lr": lr, "buffer_size": buffer_size, "minibatch_size": minibatch_size},
    )
