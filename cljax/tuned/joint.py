"""Tuned settings of `joint`: SGD's rows (the DER paper does not list JOINT's settings)."""

from cljax.tuned import OURS_JOINT, VDV_PERM_MNIST, VDV_SPLIT_MNIST, row, same_as, sgd

TUNED = {benchmark: same_as(rows, OURS_JOINT) for benchmark, rows in sgd.TUNED.items()}
# van de Ven et al.'s "Joint" (compare.py): once on every task's data, for the tasks' iterations
# together (5 x 2000 of 128), Adam 1e-3
VDV_JOINT = row(
    VDV_SPLIT_MNIST + "; compare.py's Joint: 5 x 2000 iterations on every task's data",
    optimizer="adam",
    lr=0.001,
    batch_size=128,
    steps=10000,
    last_batch="drop",
)
TUNED["split-mnist"] = {None: VDV_JOINT}
TUNED["split-mnist-domain"] = {None: VDV_JOINT}
TUNED["split-mnist-task"] = {None: {**VDV_JOINT, "task_heads": 2}}
TUNED["permuted-mnist"] = {
    None: {
        **TUNED["permuted-mnist"][None],
        "steps": 50000,
        "source": VDV_PERM_MNIST + "; Joint: 10 x 5000",
    }
}
