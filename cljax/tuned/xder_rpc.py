"""Tuned settings of `xder_rpc` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Seq-CIFAR-100 buffer 500: Mammoth HEAD's models/config/xder_rpc.yaml (the only tuning of this
variant; reproduce.json's target is 48.53) with its dataset config (batch 32, 50 epochs, lr x0.2
after epochs 35 and 45; the replay minibatch equal to the batch, as HEAD forces it).
Seq-MNIST has no published tuning: ER's protocol at lr 0.1, alpha 0.3 and beta 0.8 (xder's
Seq-CIFAR-100 values), the settings of the run beside HEAD in
experiments/results/reference_runs/mammoth_head_seqmnist_more.md."""

from cljax.tuned import OURS_ER_MNIST, row, xder_cifar100

HEAD_CIFAR100 = (
    "Mammoth HEAD (e75a491) models/config/xder_rpc.yaml at buffer 500, with its "
    "datasets/configs/seq-cifar100/xder.yaml (batch 32, 50 epochs, x0.2 after 35 and 45)"
)

TUNED = {
    "seq-mnist": {
        b: row(
            OURS_ER_MNIST, lr=0.1, batch_size=10, n_epochs=1, minibatch_size=10, alpha=0.3, beta=0.8
        )
        for b in (200, 500, 5120)
    },
    "seq-cifar100": {
        500: {
            **xder_cifar100(0.03, minibatch_size=32, alpha=0.1, beta=0.5)[500],
            "lr_gamma": 0.2,
            "source": HEAD_CIFAR100,
        }
    },
}
