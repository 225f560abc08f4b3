"""Tuned settings of `icarl` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, VDV_SPLIT_MNIST, XDER_CIFAR100, row, same_as

TUNED = {
    "seq-mnist": {
        200: row(PAPER, lr=0.1, wd_reg=0.0, batch_size=10, n_epochs=1),
        500: row(PAPER, lr=0.1, wd_reg=0.0, batch_size=10, n_epochs=1),
        5120: row(PAPER, lr=0.1, wd_reg=0.0, batch_size=10, n_epochs=1),
    },
    "seq-cifar10": {
        200: row(PAPER, lr=0.1, wd_reg=1e-05, batch_size=32, n_epochs=50),
        500: row(PAPER, lr=0.1, wd_reg=1e-05, batch_size=32, n_epochs=50),
        5120: row(PAPER, lr=0.03, wd_reg=1e-05, batch_size=32, n_epochs=50),
    },
    "seq-tinyimg": {
        b: row(PAPER, lr=0.03, wd_reg=1e-05, batch_size=32, n_epochs=100) for b in (200, 500, 5120)
    },
    # Mammoth's optim_wd (SGD weight decay w) is wd_reg = w / 2 here (the loss's wd_reg |theta|^2
    # has gradient 2 wd_reg theta)
    "seq-cifar100": {
        b: row(
            XDER_CIFAR100, lr=0.3, wd_reg=5e-06, batch_size=32, n_epochs=50, lr_milestones=(35, 45)
        )
        for b in (500, 2000)
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
# van de Ven et al.'s iCaRL (class-IL only): 100 exemplars a class by herding on normalised
# features, the old classes' targets sigmoid(old / 2), the BCE summed over the classes so far,
# the exemplars trained with the task's items, nearest-mean classification, Adam
TUNED["split-mnist"] = {
    1000: row(
        VDV_SPLIT_MNIST,
        lr=0.001,
        optimizer="adam",
        per_class=100,
        temperature=2.0,
        reduction="sum",
        normalize=True,
        wd_reg=0.0,
        batch_size=128,
        steps=2000,
        last_batch="drop",
    )
}
