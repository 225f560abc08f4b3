"""Tuned settings of `mer` per (benchmark, buffer size): see cljax/tuned/__init__.py.

The DER paper's MER rows ran Mammoth's MER, one SGD step on the mixed batch
(`inner="batch"`), with batch size 1."""

from cljax.tuned import OURS_FASHION, PAPER, row, same_as

MAMMOTH_MER = PAPER + "; Mammoth's one step on the mixed batch (inner=batch)"


def _row(lr, batch_num=1):
    return row(
        MAMMOTH_MER,
        lr=lr,
        minibatch_size=128,
        beta=1.0,
        gamma=1.0,
        batch_num=batch_num,
        inner="batch",
        batch_size=1,
        n_epochs=1,
    )


TUNED = {
    "seq-mnist": {200: _row(0.1), 500: _row(0.1), 5120: _row(0.03)},
    "mnist-360": {200: _row(0.2, 3), 500: _row(0.1, 3), 1000: _row(0.2, 3)},
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
