"""Tuned settings of `dyn_expand` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import (
    DYN_CIFAR100,
    DYN_CIFAR100_B50,
    OURS_DIGITS,
    OURS_DYN_CPU,
    row,
    same_as,
)

TUNED = {
    "seq-digits": {
        200: row(OURS_DIGITS, lr=0.05, batch_size=10, n_epochs=10, model="cnn", minibatch_size=10),
        500: row(OURS_DIGITS, lr=0.05, batch_size=10, n_epochs=10, model="cnn", minibatch_size=10),
    },
    "seq-mnist": {
        200: row(OURS_DYN_CPU, lr=0.05, batch_size=32, n_epochs=2, model="cnn", minibatch_size=32),
        500: row(OURS_DYN_CPU, lr=0.05, batch_size=32, n_epochs=2, model="cnn", minibatch_size=32),
        2000: row(OURS_DYN_CPU, lr=0.05, batch_size=32, n_epochs=2, model="cnn", minibatch_size=32),
    },
    "seq-cifar100": {
        2000: row(
            DYN_CIFAR100,
            lr=0.1,
            batch_size=128,
            n_epochs=170,
            weight_decay=0.0005,
            masks=False,
            minibatch_size=128,
            warmup_epochs=10,
            milestones=(100, 120),
            retrain_epochs=30,
            retrain_lr=0.1,
            retrain_milestones=(15,),
            retrain_weight_decay=0.0005,
            temperature=5.0,
            class_order="der",
            brightness=63 / 255,
        ),
    },
    "seq-cifar100-b50": {
        2000: row(
            DYN_CIFAR100_B50,
            lr=0.1,
            batch_size=128,
            n_epochs=170,
            weight_decay=0.0005,
            masks=False,
            minibatch_size=128,
            warmup_epochs=10,
            milestones=(100, 120),
            retrain_epochs=50,
            retrain_lr=0.05,
            retrain_milestones=(15, 30),
            retrain_weight_decay=0.0005,
            temperature=5.0,
            per_class=20,
            first_epochs=200,
            first_milestones=(60, 120, 160),
            class_order="der",
            brightness=63 / 255,
        ),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_DYN_CPU)
