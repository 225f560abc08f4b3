"""Tuned settings of `bir` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Split MNIST's row is the protocol of the authors' code; `bir`'s own defaults (fc_units 400,
fc_layers 3, z_dim 100, dg_prop 0.1 for class-IL, temperature 2) are that code's for
splitMNIST as well."""

from cljax.tuned import VDV_SPLIT_MNIST, row

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
