"""Tuned settings of `agem_r` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import PAPER, row

TUNED = {
    "mnist-360": {
        200: row(PAPER, lr=0.1, minibatch_size=128, batch_size=16, n_epochs=1),
        500: row(PAPER, lr=0.1, minibatch_size=128, batch_size=16, n_epochs=1),
        1000: row(PAPER, lr=0.1, minibatch_size=128, batch_size=4, n_epochs=1),
    },
}
