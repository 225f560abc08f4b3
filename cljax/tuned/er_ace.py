"""Tuned settings of `er_ace` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Not here: Mammoth's Seq-CIFAR-10 config (models/config/er_ace.yaml, buffer 200: lr 0.1,
task-free, one epoch at batch 10) runs the reduced ResNet-18 (nf 20) on inputs normalised
with mean 0.5 and std 2 and no augmentation (datasets/configs/seq-cifar10/er_ace.yaml);
cljax's seq-cifar10 has neither that backbone nor that transform yet."""

from cljax.tuned import OURS_ER_MNIST, row, xder_cifar100

TUNED = {
    "seq-mnist": {
        b: row(OURS_ER_MNIST, lr=0.1, batch_size=10, n_epochs=1, minibatch_size=10)
        for b in (200, 500, 5120)
    },
    "seq-cifar100": xder_cifar100(0.03, minibatch_size=32),
}
