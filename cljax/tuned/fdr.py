"""Tuned settings of `fdr` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Mammoth's rows also list an `alpha` its FDR never reads; it is left out."""

from cljax.tuned import OURS_FASHION, PAPER, row, same_as

TUNED = {
    "seq-mnist": {
        200: row(PAPER, lr=0.03, minibatch_size=128, batch_size=128, n_epochs=1),
        500: row(PAPER, lr=0.1, minibatch_size=128, batch_size=128, n_epochs=1),
        5120: row(PAPER, lr=0.1, minibatch_size=128, batch_size=128, n_epochs=1),
    },
    "perm-mnist": {
        b: row(PAPER, lr=0.1, minibatch_size=128, batch_size=128, n_epochs=1)
        for b in (200, 500, 5120)
    },
    "rot-mnist": {
        b: row(PAPER, lr=0.2, minibatch_size=128, batch_size=128, n_epochs=1)
        for b in (200, 500, 5120)
    },
    "seq-cifar10": {
        b: row(PAPER, lr=0.03, minibatch_size=32, batch_size=32, n_epochs=50)
        for b in (200, 500, 5120)
    },
    "seq-tinyimg": {
        b: row(PAPER, lr=0.03, minibatch_size=32, batch_size=32, n_epochs=100)
        for b in (200, 500, 5120)
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
