"""Tuned settings of `bic` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Not here: Mammoth's `--model_config best` for Seq-CIFAR-100 at buffer 2000
(models/config/bic.yaml, reproduce.json's 56.69: 5 tasks of 20 classes, ResNet-32, batch
128, 250 epochs); the rows below are the X-DER protocol's (its utils/best_args.py)."""

from cljax.tuned import OURS_ER_MNIST, row, xder_cifar100

TUNED = {
    "seq-mnist": {
        b: row(OURS_ER_MNIST, lr=0.1, batch_size=10, n_epochs=1, bic_batch_size=10)
        for b in (200, 500, 5120)
    },
    "seq-cifar100": xder_cifar100(0.03, bic_batch_size=32),
}
