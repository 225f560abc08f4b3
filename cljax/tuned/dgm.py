"""Tuned settings of `dgm` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import DGM_MNIST, DGM_SVHN, OURS_FASHION, row, same_as

TUNED = {
    "seq-mnist": {
        None: row(DGM_MNIST, batch_size=64, n_epochs=101, g_lr=0.002, d_lr=0.002),
    },
    "seq-svhn": {
        None: row(DGM_SVHN, batch_size=64, n_epochs=151, g_lr=0.0005, d_lr=0.0005, lamb_g=0.001),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
