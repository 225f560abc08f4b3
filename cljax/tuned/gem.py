"""Tuned settings of `gem` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, row, same_as

TUNED = {
    "seq-mnist": {
        200: row(PAPER, lr=0.01, gamma=1.0, batch_size=10, n_epochs=1),
        500: row(PAPER, lr=0.03, gamma=0.5, batch_size=10, n_epochs=1),
        5120: row(PAPER, lr=0.1, gamma=1.0, batch_size=10, n_epochs=1),
    },
    "perm-mnist": {
        b: row(PAPER, lr=0.1, gamma=0.5, batch_size=128, n_epochs=1) for b in (200, 500, 5120)
    },
    "rot-mnist": {
        b: row(PAPER, lr=0.01, gamma=0.5, batch_size=128, n_epochs=1) for b in (200, 500, 5120)
    },
    "seq-cifar10": {
        b: row(PAPER, lr=0.03, gamma=0.5, batch_size=32, n_epochs=50) for b in (200, 500, 5120)
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
