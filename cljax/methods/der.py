"""Dark Experience Replay (`der`): Buzzega et al., NeurIPS 2020 (arXiv 2004.07211).

Loss: CE(f(x), y) + alpha * ||f(x_buf) - z_buf||^2, with z the pre-softmax logits
stored when the item was offered to the reservoir.

As published and in the authors' code (Mammoth): the logits stored are the
ones of the training forward pass of the step that offers the item (before
that step's update) and are never rewritten; the replay minibatch is drawn
before the current batch is added; the MSE is the mean over items and
classes (`F.mse_loss`). The paper's replay minibatch size is a hyperparameter of
its own (128 on Seq-MNIST buffer 500), not the batch size that current
Mammoth silently substitutes.

Deviation: while the buffer holds fewer items than the minibatch, the
minibatch is padded with repeats that carry weight 0, so the loss equals the
loss over the distinct stored items (Mammoth draws fewer items), but the
repeats pass through BatchNorm in training mode.
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
    predict,
    predict_with,
    replay_batch,
    sgd_update,
)

HPARAMS = {"lr": 0.03, "buffer_size": 500, "minibatch_size": 128, "alpha": 1.0}
DerState = ReplayState


def make_dark(
    name: str, *, model, input_fn, lr, buffer_size, minibatch_size, alpha, beta=None
) -> Method:
    """DER (`beta=None`) or DER++ (`beta` weights a CE on a second, independent draw)."""
    check_buffer_hparams(buffer_size, minibatch_size)
    tx = optax.sgd(lr)

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        logits = predict(net, input_fn(example_x, None, False))
        example = {"x": example_x[0], "y": jnp.zeros((), jnp.int32), "logits": logits[0]}
        return ReplayState(net=net, buffer=buffer_lib.init(buffer_size, example))

    def train_step(state, batch, key):
        k_cur, k_mse, k_ce, k_add = jax.random.split(key, 4)
        x = input_fn(batch["x"], k_cur, True)
        mse_x, mse_items, mse_valid = replay_batch(state, k_mse, minibatch_size, input_fn)
        if beta is not None:
            ce_x, ce_items, ce_valid = replay_batch(state, k_ce, minibatch_size, input_fn)
        active = state.buffer.num_seen > 0

        def loss_fn(params):
            logits, stats = forward(state.net, params, x, state.net.batch_stats)
            loss = cross_entropy(logits, batch["y"]).mean()
            out, stats = forward(state.net, params, mse_x, stats, active=active)
            mse = jnp.mean((out - mse_items["logits"]) ** 2, axis=-1)
            loss = loss + alpha * masked_mean(mse, mse_valid)
            if beta is not None:
                out, stats = forward(state.net, params, ce_x, stats, active=active)
                loss = loss + beta * masked_mean(cross_entropy(out, ce_items["y"]), ce_valid)
            return loss, (stats, logits)

        net, loss, logits = sgd_update(state.net, loss_fn)
        offered = {"x": batch["x"], "y": batch["y"], "logits": jax.lax.stop_gradient(logits)}
        new_buffer = buffer_lib.add(state.buffer, offered, k_add)
        return ReplayState(net=net, buffer=new_buffer), {"loss": loss}

    hparams = {"lr": lr, "buffer_size": buffer_size, "minibatch_size": minibatch_size}
    hparams["alpha"] = alpha
    if beta is not None:
        hparams["beta"] = beta
    return Method(
        name=name,
        init=init,
        begin_task=identity_begin,
        train_step=train_step,
        end_task=identity_end,
        predict=predict_with(input_fn),
        hparams=hparams,
    )


def make(
    *,
    model,
    input_fn,
    lr: float = HPARAMS["lr"],
    buffer_size: int = HPARAMS["buffer_size"],
    minibatch_size: int = HPARAMS["minibatch_size"],
    alpha: float = HPARAMS["alpha"],
) -> Method:
    """DER with SGD at `lr`; `alpha` weights the logit MSE on `minibatch_size` buffer items."""
    return make_dark(
        "der",
        model=model,
        input_fn=input_fn,
        lr=lr,
        buffer_size=buffer_size,
        minibatch_size=minibatch_size,
        alpha=alpha,
    )
