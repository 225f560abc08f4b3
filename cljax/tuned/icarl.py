"""Tuned settings of `icarl` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, row, same_as

TUNED = {
    "seq-mnist": {
        200: row(PAPER, lr=0.1, wd_reg=0.0, batch_size=10, n_epochs=1),
        500: row(PAPER, lr=0.1, wd_reg=0.0, batch_size=10, n_epochs=1),
        5120: row(PAPER, lr=0.1, wd_reg=0.0, batch_size=10, n_epochs=1),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
