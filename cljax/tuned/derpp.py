"""Tuned settings of `derpp` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import (
    OURS_CIFAR100,
    OURS_DIGITS,
    OURS_FASHION,
    OURS_SVHN,
    PAPER,
    row,
    same_as,
    xder_cifar100,
)

TUNED = {
    "seq-digits": {
        200: row(
            OURS_DIGITS, lr=0.03, batch_size=10, n_epochs=10, minibatch_size=10, alpha=0.5, beta=0.5
        ),
        500: row(
            OURS_DIGITS, lr=0.03, batch_size=10, n_epochs=10, minibatch_size=10, alpha=0.5, beta=0.5
        ),
    },
    "seq-mnist": {
        200: row(
            PAPER, lr=0.03, batch_size=10, n_epochs=1, minibatch_size=128, alpha=0.2, beta=1.0
        ),
        500: row(PAPER, lr=0.03, batch_size=10, n_epochs=1, minibatch_size=10, alpha=1.0, beta=0.5),
        5120: row(PAPER, lr=0.1, batch_size=10, n_epochs=1, minibatch_size=64, alpha=0.2, beta=0.5),
    },
    "perm-mnist": {
        200: row(
            PAPER, lr=0.1, batch_size=128, n_epochs=1, minibatch_size=128, alpha=1.0, beta=1.0
        ),
        500: row(
            PAPER, lr=0.2, batch_size=128, n_epochs=1, minibatch_size=128, alpha=1.0, beta=0.5
        ),
        5120: row(
            PAPER, lr=0.2, batch_size=128, n_epochs=1, minibatch_size=128, alpha=0.5, beta=1.0
        ),
    },
    "rot-mnist": {
        200: row(
            PAPER, lr=0.1, batch_size=128, n_epochs=1, minibatch_size=128, alpha=1.0, beta=0.5
        ),
        500: row(
            PAPER, lr=0.2, batch_size=128, n_epochs=1, minibatch_size=128, alpha=0.5, beta=1.0
        ),
        5120: row(
            PAPER, lr=0.2, batch_size=128, n_epochs=1, minibatch_size=128, alpha=0.5, beta=0.5
        ),
    },
    "seq-cifar10": {
        200: row(
            PAPER, lr=0.03, batch_size=32, n_epochs=50, minibatch_size=32, alpha=0.1, beta=0.5
        ),
        500: row(
            PAPER, lr=0.03, batch_size=32, n_epochs=50, minibatch_size=32, alpha=0.2, beta=0.5
        ),
        5120: row(
            PAPER, lr=0.03, batch_size=32, n_epochs=50, minibatch_size=32, alpha=0.1, beta=1.0
        ),
    },
    "seq-tinyimg": {
        200: row(
            PAPER, lr=0.03, batch_size=32, n_epochs=100, minibatch_size=32, alpha=0.1, beta=1.0
        ),
        500: row(
            PAPER, lr=0.03, batch_size=32, n_epochs=100, minibatch_size=32, alpha=0.2, beta=0.5
        ),
        5120: row(
            PAPER, lr=0.03, batch_size=32, n_epochs=100, minibatch_size=32, alpha=0.1, beta=0.5
        ),
    },
    "seq-cifar100": xder_cifar100(0.03, minibatch_size=32, alpha=0.1, beta=0.5),
    "mnist-360": {
        200: row(PAPER, lr=0.2, batch_size=16, n_epochs=1, minibatch_size=16, alpha=0.5, beta=1.0),
        500: row(PAPER, lr=0.2, batch_size=16, n_epochs=1, minibatch_size=16, alpha=0.5, beta=1.0),
        1000: row(
            PAPER, lr=0.2, batch_size=16, n_epochs=1, minibatch_size=128, alpha=0.2, beta=1.0
        ),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
TUNED["seq-cifar100-b50"] = same_as(TUNED["seq-cifar10"], OURS_CIFAR100)
TUNED["seq-svhn"] = same_as(TUNED["seq-cifar10"], OURS_SVHN)
