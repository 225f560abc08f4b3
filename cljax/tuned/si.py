"""Tuned settings of `si` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, VDV_PERM_MNIST, VDV_SPLIT_MNIST, row, same_as

TUNED = {
    "seq-mnist": {
        None: row(PAPER, lr=0.1, c=1.0, xi=0.9, batch_size=10, n_epochs=1),
    },
    "perm-mnist": {
        None: row(PAPER, lr=0.1, c=0.5, xi=1.0, batch_size=128, n_epochs=1),
    },
    "rot-mnist": {
        None: row(PAPER, lr=0.1, c=1.0, xi=1.0, batch_size=128, n_epochs=1),
    },
    "seq-cifar10": {
        None: row(PAPER, lr=0.03, c=0.5, xi=1.0, batch_size=32, n_epochs=50),
    },
    "seq-tinyimg": {
        None: row(PAPER, lr=0.03, c=0.5, xi=1.0, batch_size=32, n_epochs=100),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
# van de Ven et al.'s SI: the path integral of the whole gradient (omega "total"), Adam, no
# clipping, its epsilon 0.1; c per experiment and scenario (params/param_values.py: splitMNIST
# 5e3 class-IL, 5e4 domain-IL, 10 task-IL; permMNIST 10)
VDV_SI = dict(omega="total", optimizer="adam", clip=0.0, xi=0.1, last_batch="drop")
SPLIT = dict(lr=0.001, batch_size=128, steps=2000, **VDV_SI)
TUNED["split-mnist"] = {None: row(VDV_SPLIT_MNIST, c=5000.0, **SPLIT)}
TUNED["split-mnist-domain"] = {None: row(VDV_SPLIT_MNIST, c=50000.0, **SPLIT)}
TUNED["split-mnist-task"] = {None: row(VDV_SPLIT_MNIST, c=10.0, task_heads=2, **SPLIT)}
TUNED["permuted-mnist"] = {
    None: row(VDV_PERM_MNIST, c=10.0, lr=0.0001, batch_size=128, steps=5000, **VDV_SI)
}
