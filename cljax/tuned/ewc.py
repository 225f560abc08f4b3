"""Tuned settings of `ewc` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Offline EWC as van de Ven et al.'s code runs it: its protocol, and its lambda per experiment
and scenario (`params/param_values.py`: splitMNIST 1e9 class-IL, 1e10 domain-IL, 1e5
task-IL; permMNIST 100)."""

from cljax.tuned import VDV_PERM_MNIST, VDV_SPLIT_MNIST, row

SPLIT = dict(lr=0.001, batch_size=128, steps=2000, last_batch="drop")
TUNED = {
    "split-mnist": {None: row(VDV_SPLIT_MNIST, ewc_lambda=1e9, **SPLIT)},
    "split-mnist-domain": {None: row(VDV_SPLIT_MNIST, ewc_lambda=1e10, **SPLIT)},
    "split-mnist-task": {None: row(VDV_SPLIT_MNIST, ewc_lambda=1e5, task_heads=2, **SPLIT)},
    "permuted-mnist": {
        None: row(
            VDV_PERM_MNIST,
            ewc_lambda=100.0,
            lr=0.0001,
            batch_size=128,
            steps=5000,
            last_batch="drop",
        )
    },
}
