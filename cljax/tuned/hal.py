"""Tuned settings of `hal` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, row, same_as


def _row(hal_lambda, beta, gamma):
    return row(
        PAPER,
        lr=0.1,
        minibatch_size=128,
        hal_lambda=hal_lambda,
        beta=beta,
        gamma=gamma,
        batch_size=128,
        n_epochs=1,
    )


TUNED = {
    "seq-mnist": {200: _row(0.1, 0.7, 0.5), 500: _row(0.1, 0.2, 0.5), 5120: _row(0.1, 0.7, 0.5)},
    "perm-mnist": {200: _row(0.1, 0.5, 0.1), 500: _row(0.1, 0.3, 0.1), 5120: _row(0.1, 0.5, 0.1)},
    "rot-mnist": {200: _row(0.2, 0.5, 0.1), 500: _row(0.1, 0.5, 0.1), 5120: _row(0.1, 0.3, 0.1)},
    "seq-cifar10": {
        b: row(
            PAPER,
            lr=0.03,
            minibatch_size=32,
            hal_lambda=hal_lambda,
            beta=beta,
            gamma=0.1,
            batch_size=32,
            n_epochs=50,
        )
        for b, hal_lambda, beta in ((200, 0.2, 0.5), (500, 0.1, 0.3), (5120, 0.1, 0.3))
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
