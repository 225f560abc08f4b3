"""Tuned settings of `ewc_on` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, row, same_as

TUNED = {
    "seq-mnist": {
        None: row(PAPER, lr=0.03, e_lambda=90.0, gamma=1.0, batch_size=10, n_epochs=1),
    },
    "perm-mnist": {
        None: row(PAPER, lr=0.1, e_lambda=0.7, gamma=1.0, batch_size=128, n_epochs=1),
    },
    "rot-mnist": {
        None: row(PAPER, lr=0.1, e_lambda=0.7, gamma=1.0, batch_size=128, n_epochs=1),
    },
    "seq-cifar10": {
        None: row(PAPER, lr=0.03, e_lambda=10.0, gamma=1.0, batch_size=32, n_epochs=50),
    },
    "seq-tinyimg": {
        None: row(PAPER, lr=0.03, e_lambda=25.0, gamma=1.0, batch_size=32, n_epochs=100),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
