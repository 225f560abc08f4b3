"""Joint training (`joint`): the upper bound, every task's data at once.

As in Mammoth, the network is trained once, when the last task has arrived, on
the shuffled union of all tasks' training data for the usual number of epochs;
rows of the accuracy matrix before the last one are the untrained network.
That schedule is the driver's `joint` protocol (`RunConfig.protocol`), which
its `Method.needs` asks for; the method itself is fine-tuning. Loss: cross-entropy.
"""

from __future__ import annotations

import dataclasses

from cljax.methods import Method, Needs, configure
from cljax.methods.common import FinetuneConfig, make_finetune


@dataclasses.dataclass(frozen=True)
class Config(FinetuneConfig):
    pass


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """Joint training with SGD (or Adam, `optimizer=adam`) at learning rate `lr`."""
    config = configure(Config, config, overrides)
    method = make_finetune("joint", config, model=model, input_fn=input_fn)
    return method._replace(needs=Needs(protocol="joint"))
