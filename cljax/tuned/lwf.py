"""Tuned settings of `lwf` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import (
    OURS_FASHION,
    PAPER,
    VDV_PERM_MNIST,
    VDV_SPLIT_MNIST,
    XDER_CIFAR100,
    row,
    same_as,
)

TUNED = {
    "seq-mnist": {
        None: row(
            PAPER, lr=0.03, alpha=1.0, softmax_temp=2.0, wd_reg=0.0005, batch_size=10, n_epochs=1
        ),
    },
    "seq-cifar10": {
        None: row(
            PAPER, lr=0.01, alpha=3.0, softmax_temp=2.0, wd_reg=0.0005, batch_size=32, n_epochs=50
        ),
    },
    "seq-tinyimg": {
        None: row(
            PAPER, lr=0.01, alpha=1.0, softmax_temp=2.0, wd_reg=0.0005, batch_size=32, n_epochs=100
        ),
    },
    # Mammoth's optim_wd (SGD weight decay w) is wd_reg = w / 2 here (the loss's wd_reg |theta|^2
    # has gradient 2 wd_reg theta); alpha and softmax_temp are its parser's defaults
    "seq-cifar100": {
        None: row(
            XDER_CIFAR100,
            lr=0.03,
            alpha=0.5,
            softmax_temp=2.0,
            wd_reg=0.00025,
            batch_size=32,
            n_epochs=50,
            lr_milestones=(35, 45),
        ),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
# van de Ven et al.'s LwF (current data replayed with distillation): no warm-up, CE and
# distillation over every output (task-IL: the item's head, and each earlier head summed),
# the distillation weighted by the number of earlier tasks in domain-IL, Adam, no L2
VDV_LWF = dict(
    columns="all",
    warmup=False,
    optimizer="adam",
    wd_reg=0.0,
    alpha=1.0,
    softmax_temp=2.0,
    batch_size=128,
    last_batch="drop",
)
TUNED["split-mnist"] = {None: row(VDV_SPLIT_MNIST, lr=0.001, steps=2000, **VDV_LWF)}
TUNED["split-mnist-domain"] = {
    None: row(VDV_SPLIT_MNIST, lr=0.001, steps=2000, past_weight=True, **VDV_LWF)
}
TUNED["split-mnist-task"] = {
    None: row(VDV_SPLIT_MNIST, lr=0.001, steps=2000, task_heads=2, **VDV_LWF)
}
TUNED["permuted-mnist"] = {
    None: row(VDV_PERM_MNIST, lr=0.0001, steps=5000, past_weight=True, **VDV_LWF)
}
