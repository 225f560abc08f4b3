"""Joint training (`joint`): the upper bound, every task's data at once.

As in Mammoth, the network is trained once, when the last task has arrived, on
the shuffled union of all tasks' training data for the usual number of epochs;
rows of the accuracy matrix before the last one are the untrained network.
Loss: cross-entropy.
"""

from __future__ import annotations

from cljax.methods import Method
from cljax.methods.sgd import make_finetune

HPARAMS = {"lr": 0.03}


def make(*, model, input_fn, lr: float = HPARAMS["lr"]) -> Method:
    """Joint training with SGD at learning rate `lr`."""
    return make_finetune("joint", model=model, input_fn=input_fn, lr=lr, joint=True)
