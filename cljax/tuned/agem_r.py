"""Tuned settings of `agem_r` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import OURS_FASHION, PAPER, row, same_as

# Mammoth's best_args lists A-GEM-R on every benchmark, the DER paper's Table 2 on none but
# MNIST-360 (its own table): those rows are Mammoth's alone.
BEST_ARGS = (
    "Mammoth's utils/best_args.py at 5dc82be (the DER paper's code); the paper reports no "
    "A-GEM-R result on this benchmark"
)

TUNED = {
    "seq-mnist": {
        b: row(BEST_ARGS, lr=0.1, minibatch_size=128, batch_size=10, n_epochs=1)
        for b in (200, 500, 5120)
    },
    "perm-mnist": {
        b: row(BEST_ARGS, lr=0.1, minibatch_size=128, batch_size=128, n_epochs=1)
        for b in (200, 500, 5120)
    },
    "rot-mnist": {
        200: row(BEST_ARGS, lr=0.1, minibatch_size=128, batch_size=128, n_epochs=1),
        500: row(BEST_ARGS, lr=0.3, minibatch_size=128, batch_size=128, n_epochs=1),
        5120: row(BEST_ARGS, lr=0.3, minibatch_size=128, batch_size=128, n_epochs=1),
    },
    "seq-cifar10": {
        b: row(BEST_ARGS, lr=0.03, minibatch_size=32, batch_size=32, n_epochs=50)
        for b in (200, 500, 5120)
    },
    "seq-tinyimg": {
        b: row(BEST_ARGS, lr=0.01, minibatch_size=32, batch_size=32, n_epochs=100)
        for b in (200, 500, 5120)
    },
    "mnist-360": {
        200: row(PAPER, lr=0.1, minibatch_size=128, batch_size=16, n_epochs=1),
        500: row(PAPER, lr=0.1, minibatch_size=128, batch_size=16, n_epochs=1),
        1000: row(PAPER, lr=0.1, minibatch_size=128, batch_size=4, n_epochs=1),
    },
}
TUNED["seq-fashion-mnist"] = same_as(TUNED["seq-mnist"], OURS_FASHION)
