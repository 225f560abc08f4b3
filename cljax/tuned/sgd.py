"""Tuned settings of `sgd` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import (
    OURS_CIFAR100,
    OURS_DIGITS,
    OURS_FASHION,
    OURS_SVHN,
    PAPER,
    VDV_PERM_MNIST,
    VDV_SPLIT_MNIST,
    XDER_CIFAR100,
    row,
    same_as,
)

TUNED = {
    "seq-digits": {
        None: row(OURS_DIGITS, lr=0.03, batch_size=10, n_epochs=10),
    },
    "seq-mnist": {
        None: row(PAPER, lr=0.03, batch_size=10, n_epochs=1),
    },
    "perm-mnist": {
        None: row(PAPER, lr=0.2, batch_size=128, n_epochs=1),
    },
    "rot-mnist": {
        None: row(PAPER, lr=0.2, batch_size=128, n_epochs=1),
    },
    "seq-cifar10": {
        None: row(PAPER, lr=0.1, batch_size=32, n_epochs=50),
    },
    "seq-tinyimg": {
        None: row(PAPER, lr=0.03, batch_size=32, n_epochs=100),
    },
    "seq-cifar100": {
        None: row(XDER_CIFAR100, lr=0.03, batch_size=32, n_epochs=50, lr_milestones=(35, 45)),
    },
    "mnist-360": {
        None: row(PAPER, lr=0.1, batch_size=4, n_epochs=1),
    },
}
# van de Ven et al.'s "None": Adam 1e-3, 2000 iterations of 128 a task
VDV_NONE = row(
    VDV_SPLIT_MNIST,
    optimizer="adam",
    lr=0.001,
    batch_size=128,
    steps=2000,
    last_batch="drop",
)
TUNED["split-mnist"] = {None: VDV_NONE}
TUNED["split-mnist-domain"] = {None: VDV_NONE}
TUNED["split-mnist-task"] = {None: {**VDV_NONE, "task_heads": 2}}
TUNED["permuted-mnist"] = {
    None: row(
        VDV_PERM_MNIST, optimizer="adam", lr=0.0001, batch_size=128, steps=5000, last_batch="drop"
    )
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
TUNED["seq-cifar100-b50"] = same_as(TUNED["seq-cifar10"], OURS_CIFAR100)
TUNED["seq-svhn"] = same_as(TUNED["seq-cifar10"], OURS_SVHN)
