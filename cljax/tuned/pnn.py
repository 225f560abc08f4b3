"""Tuned settings of `pnn` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, row, same_as

TUNED = {
    "seq-mnist": {
        None: row(PAPER, lr=0.1, batch_size=10, n_epochs=1),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
