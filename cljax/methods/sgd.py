"""Fine-tuning (`sgd`): plain SGD (or Adam: `optimizer=adam`, van de Ven et al.'s "None") on each
task in turn, the lower bound of every table.

Loss: cross-entropy of the current batch, nothing else.
"""

from __future__ import annotations

import dataclasses

from cljax.methods import Method, configure
from cljax.methods.common import FinetuneConfig, make_finetune


@dataclasses.dataclass(frozen=True)
class Config(FinetuneConfig):
    pass


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """Fine-tuning with SGD (or Adam) at learning rate `lr`."""
    config = configure(Config, config, overrides)
    return make_finetune("sgd", config, model=model, input_fn=input_fn)
