"""Tuned settings of `bir` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Split MNIST's row is the protocol of the authors' code; `bir`'s own defaults (fc_units 400,
fc_layers 3, z_dim 100, dg_prop 0.1 for class-IL, temperature 2) are that code's for
splitMNIST as well."""

from cljax.tuned import VDV_PERM_MNIST, VDV_SPLIT_MNIST, row

TUNED = {
    "split-mnist": {
        None: row(VDV_SPLIT_MNIST, lr=0.001, batch_size=128, steps=2000, last_batch="drop"),
    },
    # the domain scenario's defaults of that code: gates per task ("context"), dg_prop 0.1
    "split-mnist-domain": {
        None: row(
            VDV_SPLIT_MNIST, lr=0.001, batch_size=128, steps=2000, last_batch="drop", gates="task"
        ),
    },
    # permMNIST (domain): 1000 units, gates per task at dg_prop 0.5
    "permuted-mnist": {
        None: row(
            VDV_PERM_MNIST,
            lr=0.0001,
            fc_units=1000,
            batch_size=128,
            steps=5000,
            last_batch="drop",
            gates="task",
            gate_prop=0.5,
        ),
    },
    # the task scenario's: a head per task, no decoder gates (that code's dg_prop 0 there)
    "split-mnist-task": {
        None: row(
            VDV_SPLIT_MNIST,
            lr=0.001,
            batch_size=128,
            steps=2000,
            last_batch="drop",
            task_heads=2,
            gate_prop=0.0,
        ),
    },
}
