"""Tuned settings of `gss` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Mammoth's `batch_num` is 1 in every row (one step a batch), as here."""

from cljax.tuned import OURS_FASHION, PAPER, row, same_as


def _row(lr, minibatch, gss_minibatch):
    return row(
        PAPER,
        lr=lr,
        minibatch_size=minibatch,
        gss_minibatch_size=gss_minibatch,
        batch_size=128,
        n_epochs=1,
    )


TUNED = {
    "seq-mnist": {200: _row(0.1, 10, 10), 500: _row(0.1, 10, 10), 5120: _row(0.1, 128, 10)},
    "perm-mnist": {200: _row(0.2, 10, 128), 500: _row(0.1, 128, 10), 5120: _row(0.03, 128, 10)},
    "rot-mnist": {200: _row(0.2, 10, 128), 500: _row(0.2, 128, 128), 5120: _row(0.2, 128, 128)},
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
