"""Tuned settings of `lucir` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Not here: Mammoth's `--model_config best` for Seq-CIFAR-100 at buffer 2000
(models/config/lucir.yaml, reproduce.json's 50.0: batch 128, 160 epochs, lr 0.1, x0.1 after
80 and 120); the rows below are the X-DER protocol's (its utils/best_args.py)."""

from cljax.tuned import OURS_ER_MNIST, row, xder_cifar100

LUCIR = {"lamda_base": 5.0, "lamda_mr": 1.0, "k_mr": 2, "mr_margin": 0.5, "lr_finetune": 0.01}

TUNED = {
    "seq-mnist": {
        b: row(
            OURS_ER_MNIST,
            lr=0.1,
            batch_size=10,
            n_epochs=1,
            fit_batch_size=10,
            fitting_epochs=20,
            **LUCIR,
        )
        for b in (200, 500, 5120)
    },
    "seq-cifar100": xder_cifar100(
        0.03, optim_mom=0.9, optim_wd=0.0, fitting_epochs=20, fit_batch_size=32, **LUCIR
    ),
}
