"""Tuned settings of `mergan` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import MERGAN, OURS_CIFAR100, OURS_DIGITS, OURS_FASHION, row, same_as

TUNED = {
    "seq-digits": {
        None: row(
            OURS_DIGITS, lr=0.01, batch_size=80, n_epochs=1, steps=300, g_lr=0.001, d_lr=0.001
        ),
    },
    "seq-mnist": {
        None: row(
            MERGAN, lr=0.001, batch_size=320, n_epochs=1, steps=4001, gan="mlp", ra_weight=0.001
        ),
    },
    "seq-cifar10": {
        None: row(
            MERGAN, lr=0.001, batch_size=320, n_epochs=1, steps=8001, gan="dc", ra_weight=0.01
        ),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
TUNED["seq-cifar100"] = same_as(TUNED["seq-cifar10"], OURS_CIFAR100)
TUNED["seq-cifar100-b50"] = same_as(TUNED["seq-cifar10"], OURS_CIFAR100)
TUNED["seq-svhn"] = same_as(TUNED["seq-cifar10"], MERGAN)
