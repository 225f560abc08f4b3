"""Tuned settings of `rpc` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Not here: Mammoth's Seq-CIFAR-10 config (models/config/rpc.yaml: buffer 100, Adam at 1e-4,
batch 128, 5 epochs; reproduce.json's 31.8): `rpc` trains with SGD only."""

from cljax.tuned import XDER_CIFAR100, row

MNIST = (
    "ours: no published Seq-MNIST tuning; ER's Seq-MNIST protocol (one epoch at batch 10) at "
    "lr 0.1, the replay minibatch equal to the batch as Mammoth forces it (main.py:431-436)"
)

TUNED = {
    "seq-mnist": {
        b: row(MNIST, lr=0.1, batch_size=10, n_epochs=1, minibatch_size=10)
        for b in (200, 500, 5120)
    },
    "seq-cifar100": {
        b: row(
            XDER_CIFAR100,
            lr=0.1,
            batch_size=32,
            n_epochs=50,
            lr_milestones=(35, 45),
            minibatch_size=32,
        )
        for b in (500, 2000)
    },
}
