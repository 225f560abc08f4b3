"""Tuned settings of `gdumb` per (benchmark, buffer size): see cljax/tuned/__init__.py.

GDumb learns nothing on the stream, so `batch_size` and `n_epochs` only feed its memory
(one pass, as Mammoth forces); `fit_batch_size` is the batch of its fits, Mammoth's run
batch size on that benchmark."""

from cljax.tuned import row

MAMMOTH_DEFAULTS = (
    "Mammoth e75a491's defaults for gdumb (models/gdumb.py) at its Seq-MNIST batch size 64; "
    "no tuned config for Seq-MNIST exists"
)
MAMMOTH_CIFAR10 = "Mammoth e75a491's models/config/gdumb.yaml (seq-cifar10, buffer 500)"
MAMMOTH_CIFAR100 = (
    "Mammoth e75a491's utils/best_args.py for gdumb on seq-cifar100 (--load_best_args)"
)
FIT = {"maxlr": 0.05, "minlr": 0.0005, "cutmix_alpha": 1.0}

TUNED = {
    "seq-mnist": {
        b: row(
            MAMMOTH_DEFAULTS,
            **FIT,
            fitting_epochs=256,
            fit_batch_size=64,
            batch_size=64,
            n_epochs=1,
        )
        for b in (200, 500, 5120)
    },
    "seq-cifar10": {
        500: row(
            MAMMOTH_CIFAR10,
            **FIT,
            fitting_epochs=256,
            fit_batch_size=32,
            batch_size=32,
            n_epochs=1,
        )
    },
    "seq-cifar100": {
        500: row(
            MAMMOTH_CIFAR100,
            **FIT,
            fitting_epochs=250,
            optim_mom=0.9,
            optim_wd=1e-6,
            fit_batch_size=32,
            batch_size=32,
            n_epochs=1,
        ),
        2000: row(
            MAMMOTH_CIFAR100,
            **FIT,
            fitting_epochs=250,
            optim_mom=0.0,
            optim_wd=1e-6,
            fit_batch_size=32,
            batch_size=32,
            n_epochs=1,
        ),
    },
}
