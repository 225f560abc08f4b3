"""Tuned settings of `dgr` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import DGR, OURS_CIFAR100, OURS_DIGITS, OURS_FASHION, row, same_as

TUNED = {
    "seq-digits": {
        None: row(
            OURS_DIGITS, lr=0.01, batch_size=80, n_epochs=1, steps=300, g_lr=0.001, d_lr=0.001
        ),
    },
    "seq-mnist": {
        None: row(DGR, lr=0.001, batch_size=640, n_epochs=1, steps=2000, gan="mlp"),
    },
    "seq-cifar10": {
        None: row(DGR, lr=0.001, batch_size=640, n_epochs=1, steps=2000, gan="dc"),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
TUNED["seq-cifar100"] = same_as(TUNED["seq-cifar10"], OURS_CIFAR100)
TUNED["seq-cifar100-b50"] = same_as(TUNED["seq-cifar10"], OURS_CIFAR100)
TUNED["seq-svhn"] = same_as(TUNED["seq-cifar10"], DGR)
