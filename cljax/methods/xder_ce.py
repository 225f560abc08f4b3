"""X-DER with cross-entropy future preparation (`xder_ce`): the X-DER paper's ablation
(Boschini et al., TPAMI 2022), as Mammoth HEAD runs it (`models/xder_ce.py`, e75a491).

`xder` without the contrastive loss on the future heads: the memory written at the end of
each task, the stored responses' heads t.. rewritten (during the task and at its end), the
DER and DER++ terms, the future constraint (see `cljax.methods.xder`). Loss:
CE(f(x)[cur], y) + alpha * ||f(x') - z'||^2 + beta * CE(f(x'')[past], y'')
+ constr_eta * future constraint (+ the past one with `past_constraint`).

HEAD's defaults: no past constraint, `constr_eta` 0.01, `align_bn` on.
`ce_future_heads` gives the tpami2023 code's batch CE over the current and every future
head (the future heads trained as the current classes' negatives; HEAD's docstring still
says so, its code takes the current head only).

Deviations from the tpami2023 code (ad4d390), which differs from HEAD here: it also fills a
reservoir during the first task (of the batch's transformed inputs, transformed again when
replayed) and empties it at the first task's end, and its end-of-task rewrite takes only
the finished task's head; HEAD does neither and is followed. Otherwise as `xder`.
"""

from __future__ import annotations

import dataclasses

from cljax.core.config import hparam
from cljax.methods import Method, configure
from cljax.methods.xder import XderConfig, make_xder

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(XderConfig):
    constr_eta: float = hparam(0.01, "weight of the future and past constraints", ge=0)
    past_constraint: bool = hparam(False, "the past constraint (HEAD has none)")
    align_bn: bool = hparam(
        True, "Mammoth HEAD's BatchNorm handling of the replay passes (see xder's docstring)"
    )
    ce_future_heads: bool = hparam(
        False, "the batch's CE over the current and future heads (the tpami2023 code)"
    )


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """X-DER without the contrastive term, SGD at `lr`."""
    config = configure(Config, config, overrides)
    heads = "current+future" if config.ce_future_heads else "current"
    return make_xder("xder_ce", config, model=model, input_fn=input_fn, ce_heads=heads)
