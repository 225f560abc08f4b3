"""Dark Experience Replay++ (`derpp`): Buzzega et al., NeurIPS 2020 (arXiv 2004.07211).

Loss: CE(f(x), y) + alpha * ||f(x') - z'||^2 + beta * CE(f(x''), y''), where
(x', z') and (x'', y'') are two independent minibatches drawn from the buffer
(as published and in the authors' code). Everything else is as in `der`.
"""

from __future__ import annotations

import dataclasses

from cljax.core.config import hparam
from cljax.methods import Method, configure
from cljax.methods.common import DarkConfig, make_dark

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4, "alpha": 0.5, "beta": 0.5}


@dataclasses.dataclass(frozen=True)
class Config(DarkConfig):
    minibatch_size: int = hparam(10, "buffer items in each of the two replay minibatches", ge=1)
    beta: float = hparam(0.5, "weight of the replayed cross-entropy (the paper's beta)", ge=0)


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """DER++ with SGD at `lr`; `alpha` weights the logit MSE, `beta` the replayed CE."""
    config = configure(Config, config, overrides)
    return make_dark("derpp", config, model=model, input_fn=input_fn)
