"""Tuned settings of `er` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import (
    OURS_CIFAR100,
    OURS_DIGITS,
    OURS_FASHION,
    OURS_SVHN,
    PAPER,
    VDV_PERM_MNIST,
    VDV_SPLIT_MNIST,
    row,
    same_as,
    xder_cifar100,
)

TUNED = {
    "seq-digits": {
        200: row(OURS_DIGITS, lr=0.1, batch_size=10, n_epochs=10, minibatch_size=10),
        500: row(OURS_DIGITS, lr=0.1, batch_size=10, n_epochs=10, minibatch_size=10),
    },
    "seq-mnist": {
        200: row(PAPER, lr=0.01, batch_size=10, n_epochs=1, minibatch_size=10),
        500: row(PAPER, lr=0.1, batch_size=10, n_epochs=1, minibatch_size=10),
        5120: row(PAPER, lr=0.1, batch_size=10, n_epochs=1, minibatch_size=10),
    },
    "perm-mnist": {
        200: row(PAPER, lr=0.2, batch_size=128, n_epochs=1, minibatch_size=128),
        500: row(PAPER, lr=0.2, batch_size=128, n_epochs=1, minibatch_size=128),
        5120: row(PAPER, lr=0.2, batch_size=128, n_epochs=1, minibatch_size=128),
    },
    "rot-mnist": {
        200: row(PAPER, lr=0.2, batch_size=128, n_epochs=1, minibatch_size=128),
        500: row(PAPER, lr=0.2, batch_size=128, n_epochs=1, minibatch_size=128),
        5120: row(PAPER, lr=0.2, batch_size=128, n_epochs=1, minibatch_size=128),
    },
    "seq-cifar10": {
        200: row(PAPER, lr=0.1, batch_size=32, n_epochs=50, minibatch_size=32),
        500: row(PAPER, lr=0.1, batch_size=32, n_epochs=50, minibatch_size=32),
        5120: row(PAPER, lr=0.1, batch_size=32, n_epochs=50, minibatch_size=32),
    },
    "seq-tinyimg": {
        200: row(PAPER, lr=0.1, batch_size=32, n_epochs=100, minibatch_size=32),
        500: row(PAPER, lr=0.03, batch_size=32, n_epochs=100, minibatch_size=32),
        5120: row(PAPER, lr=0.1, batch_size=32, n_epochs=100, minibatch_size=32),
    },
    "seq-cifar100": xder_cifar100(0.1, minibatch_size=32),
    "mnist-360": {
        200: row(PAPER, lr=0.2, batch_size=1, n_epochs=1, minibatch_size=16),
        500: row(PAPER, lr=0.2, batch_size=1, n_epochs=1, minibatch_size=16),
        1000: row(PAPER, lr=0.2, batch_size=4, n_epochs=1, minibatch_size=16),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
TUNED["seq-cifar100-b50"] = same_as(TUNED["seq-cifar10"], OURS_CIFAR100)
TUNED["seq-svhn"] = same_as(TUNED["seq-cifar10"], OURS_SVHN)
# van de Ven et al.'s ER: a memory of 100 items a class (1000 over five two-class tasks; 10 a
# class on permMNIST: 100 a task, 1000 over ten), filled at each task's end, replayed 128 a
# step with the loss weighted 1/t : 1 - 1/t, Adam
VDV_ER = dict(
    memory="task_end",
    weighting="tasks",
    balanced=True,
    optimizer="adam",
    minibatch_size=128,
    batch_size=128,
    last_batch="drop",
)
TUNED["split-mnist"] = {1000: row(VDV_SPLIT_MNIST, lr=0.001, steps=2000, **VDV_ER)}
TUNED["split-mnist-domain"] = TUNED["split-mnist"]
TUNED["split-mnist-task"] = {
    1000: row(VDV_SPLIT_MNIST, lr=0.001, steps=2000, task_heads=2, **VDV_ER)
}
TUNED["permuted-mnist"] = {1000: row(VDV_PERM_MNIST, lr=0.0001, steps=5000, **VDV_ER)}
