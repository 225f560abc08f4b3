"""Tuned settings of `pnn` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, row, same_as

TUNED = {
    "seq-mnist": {
        None: row(PAPER, lr=0.1, batch_size=10, n_epochs=1),
    },
    # pnn runs on the mlp backbone only (no ResNet columns): these rows wait for one
    "seq-cifar10": {
        None: row(PAPER, lr=0.03, batch_size=32, n_epochs=50),
    },
    "seq-tinyimg": {
        None: row(PAPER, lr=0.03, batch_size=32, n_epochs=100),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
