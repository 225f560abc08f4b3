"""Tuned settings of `rpc` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Not here: Mammoth's Seq-CIFAR-10 config (models/config/rpc.yaml: buffer 100, Adam at 1e-4,
batch 128, 5 epochs; reproduce.json's 31.8): `rpc` trains with SGD only."""

from cljax.tuned import OURS_ER_MNIST, row, xder_cifar100

TUNED = {
    "seq-mnist": {
        b: row(OURS_ER_MNIST, lr=0.1, batch_size=10, n_epochs=1, minibatch_size=10)
        for b in (200, 500, 5120)
    },
    "seq-cifar100": xder_cifar100(0.1, minibatch_size=32),
}
