"""Dark Experience Replay++ (`derpp`): Buzzega et al., NeurIPS 2020 (arXiv 2004.07211).

Loss: CE(f(x), y) + alpha * ||f(x') - z'||^2 + beta * CE(f(x''), y''), where
(x', z') and (x'', y'') are two independent minibatches drawn from the buffer
(as published and in the authors' code). Everything else is as in `der`.
"""

from __future__ import annotations

from cljax.methods import Method
from cljax.methods.der import DerState, make_dark

HPARAMS = {"lr": 0.03, "buffer_size": 500, "minibatch_size": 10, "alpha": 1.0, "beta": 0.5}
DerppState = DerState


def make(
    *,
    model,
    input_fn,
    lr: float = HPARAMS["lr"],
    buffer_size: int = HPARAMS["buffer_size"],
    minibatch_size: int = HPARAMS["minibatch_size"],
    alpha: float = HPARAMS["alpha"],
    beta: float = HPARAMS["beta"],
) -> Method:
    """DER++ with SGD at `lr`; `alpha` weights the logit MSE, `beta` the replayed CE."""
    return make_dark(
        "derpp",
        model=model,
        input_fn=input_fn,
        lr=lr,
        buffer_size=buffer_size,
        minibatch_size=minibatch_size,
        alpha=alpha,
        beta=beta,
    )
