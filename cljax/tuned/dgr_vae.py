"""Tuned settings of `dgr_vae` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Split MNIST's row is the protocol of the authors' code; the VAE's defaults (400 units, 3
layers, z 100, its Adam at the solver's 1e-3) are that code's for splitMNIST (`g_fc_uni`,
`g_fc_lay`, `g_z_dim`, `lr_gen` default to the classifier's)."""

from cljax.tuned import VDV_PERM_MNIST, VDV_SPLIT_MNIST, row

TUNED = {
    "split-mnist": {
        None: row(
            VDV_SPLIT_MNIST, lr=0.001, g_lr=0.001, batch_size=128, steps=2000, last_batch="drop"
        ),
    },
}
TUNED["split-mnist-domain"] = TUNED["split-mnist"]
TUNED["split-mnist-task"] = {None: {**TUNED["split-mnist"][None], "task_heads": 2}}
TUNED["permuted-mnist"] = {  # the generator copies the classifier's 1000 units
    None: row(
        VDV_PERM_MNIST,
        lr=0.0001,
        g_lr=0.0001,
        fc_units=1000,
        batch_size=128,
        steps=5000,
        last_batch="drop",
    )
}
