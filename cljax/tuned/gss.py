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
# Mammoth's best_args have no GSS row for MNIST-360 (none of its versions): ER's MNIST-360
# row (lr 0.2, one item a step, 16 replayed), its gradients scored against 16 stored items
OURS_GSS360 = "ours: no published GSS row for MNIST-360; ER's row, gss_minibatch_size 16"
TUNED["mnist-360"] = {
    b: row(OURS_GSS360, lr=0.2, minibatch_size=16, gss_minibatch_size=16, batch_size=1, n_epochs=1)
    for b in (200, 500, 1000)
}
