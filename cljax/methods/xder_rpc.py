"""X-DER with a regular-polytope classifier (`xder_rpc`): the X-DER paper's variant
(Boschini et al., TPAMI 2022), as Mammoth HEAD runs it (`models/xder_rpc.py`, e75a491).

`xder` without the contrastive loss, every output taken through the fixed classifier of
`rpc` (`f(x)[:, :C-1] @ P`, `P` the `(C-1, C)` regular simplex, `cljax.models.heads`): the
batch's and the replayed items' losses, the stored responses, their updates, the
constraints and the predictions. Loss: CE(s(x)[cur], y) + alpha * ||s(x') - z'||^2 +
beta * CE(s(x'')[past], y'') + constr_eta * future constraint, s the polytope's scores.

As HEAD: no past constraint by default, and both replayed minibatches are forwarded with the
batch's BatchNorm statistics, the running ones kept (`bn_track_stats(False)`).

Deviations: the tpami2023 code (ad4d390) also has the past constraint (set
`past_constraint`) and updates the running statistics in the replay passes; HEAD's
`--clip_grad` (off by default) and `--n_rpc_heads` are not available. Otherwise as `xder`.
"""

from __future__ import annotations

import dataclasses

from cljax.core.config import hparam
from cljax.methods import Method, configure
from cljax.methods.xder import XderConfig, make_xder

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(XderConfig):
    past_constraint: bool = hparam(False, "the past constraint (HEAD: off; tpami2023: on)")
    align_bn: bool = hparam(
        False, "no effect: HEAD parses it (its config sets it) and its code is commented out"
    )


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """X-DER on the fixed regular-polytope classifier, SGD at `lr`."""
    config = configure(Config, config, overrides)
    return make_xder(
        "xder_rpc", config, model=model, input_fn=input_fn, polytope=True, freeze_replay_bn=True
    )
