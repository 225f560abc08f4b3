"""Tuned settings of `agem` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, VDV_PERM_MNIST, VDV_SPLIT_MNIST, row, same_as

TUNED = {
    "seq-mnist": {
        b: row(PAPER, lr=0.1, minibatch_size=128, batch_size=10, n_epochs=1)
        for b in (200, 500, 5120)
    },
    "perm-mnist": {
        b: row(PAPER, lr=0.1, minibatch_size=128, batch_size=128, n_epochs=1)
        for b in (200, 500, 5120)
    },
    "rot-mnist": {
        200: row(PAPER, lr=0.1, minibatch_size=128, batch_size=128, n_epochs=1),
        500: row(PAPER, lr=0.3, minibatch_size=128, batch_size=128, n_epochs=1),
        5120: row(PAPER, lr=0.3, minibatch_size=128, batch_size=128, n_epochs=1),
    },
    "seq-cifar10": {
        b: row(PAPER, lr=0.03, minibatch_size=32, batch_size=32, n_epochs=50)
        for b in (200, 500, 5120)
    },
    "seq-tinyimg": {
        b: row(PAPER, lr=0.01, minibatch_size=32, batch_size=32, n_epochs=100)
        for b in (200, 500, 5120)
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
# van de Ven et al.'s A-GEM: its memory (100 items a class, 1000 over five two-class tasks; 10
# a class on permMNIST) filled at each task's end, a reference batch of 128, Adam
VDV_AGEM = dict(
    balanced=True, optimizer="adam", minibatch_size=128, batch_size=128, last_batch="drop"
)
TUNED["split-mnist"] = {1000: row(VDV_SPLIT_MNIST, lr=0.001, steps=2000, **VDV_AGEM)}
TUNED["split-mnist-domain"] = TUNED["split-mnist"]
TUNED["split-mnist-task"] = {
    1000: row(VDV_SPLIT_MNIST, lr=0.001, steps=2000, task_heads=2, **VDV_AGEM)
}
TUNED["permuted-mnist"] = {1000: row(VDV_PERM_MNIST, lr=0.0001, steps=5000, **VDV_AGEM)}
