"""Tuned settings of `lwf` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, XDER_CIFAR100, row, same_as

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
