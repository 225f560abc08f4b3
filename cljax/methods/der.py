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

While the buffer holds fewer items than the minibatch, the minibatch is padded
with repeats that carry weight 0 (one compiled shape; Mammoth draws fewer items):
the loss is that over the distinct stored items, and a backbone with BatchNorm
(`resnet18`) computes its batch statistics over them alone, as Mammoth's forward
of the distinct items does (`tests/test_torch_equivalence.py`). Deviations:
nothing known.
"""

from __future__ import annotations

import dataclasses

from cljax.core.config import hparam
from cljax.methods import Method, configure
from cljax.methods.common import DarkConfig, make_dark

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4, "alpha": 0.5}


@dataclasses.dataclass(frozen=True)
class Config(DarkConfig):
    minibatch_size: int = hparam(128, "buffer items in the logit-MSE minibatch", ge=1)


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """DER with SGD at `lr`; `alpha` weights the logit MSE on `minibatch_size` buffer items."""
    config = configure(Config, config, overrides)
    return make_dark("der", config, model=model, input_fn=input_fn)
