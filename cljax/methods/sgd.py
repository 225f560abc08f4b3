"""Fine-tuning (`sgd`): plain SGD on each task in turn, the lower bound of every table.

Loss: cross-entropy of the current batch, nothing else.
"""

from __future__ import annotations

import optax
from flax import struct

from cljax.methods import Method, identity_begin, identity_end
from cljax.methods.common import (
    NetState,
    create_net,
    cross_entropy,
    forward,
    predict_with,
    sgd_update,
)

HPARAMS = {"lr": 0.03}


@struct.dataclass
class SgdState:
    """Just the network."""

    net: NetState


def make_finetune(name: str, *, model, input_fn, lr: float, joint: bool) -> Method:
    """A classifier trained by cross-entropy on whatever batches the driver feeds it."""
    tx = optax.sgd(lr)

    def init(key, example_x):
        return SgdState(net=create_net(model, tx, key, input_fn(example_x, key, False)))

    def train_step(state, batch, key):
        x = input_fn(batch["x"], key, True)

        def loss_fn(params):
            logits, stats = forward(state.net, params, x, state.net.batch_stats)
            return cross_entropy(logits, batch["y"]).mean(), (stats, None)

        net, loss, _ = sgd_update(state.net, loss_fn)
        return SgdState(net=net), {"loss": loss}

    return Method(
        name=name,
        init=init,
        begin_task=identity_begin,
        train_step=train_step,
        end_task=identity_end,
        predict=predict_with(input_fn),
        hparams={"lr": lr},
        joint=joint,
    )


def make(*, model, input_fn, lr: float = HPARAMS["lr"]) -> Method:
    """Fine-tuning with SGD at learning rate `lr`."""
    return make_finetune("sgd", model=model, input_fn=input_fn, lr=lr, joint=False)
