"""Tuned settings of `cls_er` per (benchmark, buffer size): see cljax/tuned/__init__.py."""

from cljax.tuned import row

CLSER = "the CLS-ER authors' utils/best_args.py (NeurAI-Lab/CLS-ER, 73f3e63)"
FIELDS = (
    "reg_weight",
    "stable_model_update_freq",
    "stable_model_alpha",
    "plastic_model_update_freq",
    "plastic_model_alpha",
    "lr",
    "minibatch_size",
    "batch_size",
    "n_epochs",
)


def clser(*values) -> dict:
    """One row of the authors' best_args, its values in the order of `FIELDS`."""
    return row(CLSER, **dict(zip(FIELDS, values, strict=True)))


TUNED = {
    "seq-mnist": {
        200: clser(2.0, 0.9, 0.99, 1.0, 0.99, 0.03, 128, 10, 1),
        500: clser(2.0, 0.9, 0.99, 1.0, 0.99, 0.1, 32, 10, 1),
        5120: clser(2.0, 0.8, 0.99, 1.0, 0.99, 0.1, 32, 10, 1),
    },
    "perm-mnist": {
        200: clser(1.0, 0.8, 0.99, 1.0, 0.99, 0.2, 128, 128, 1),
        500: clser(1.0, 0.8, 0.99, 1.0, 0.99, 0.2, 128, 128, 1),
        5120: clser(1.0, 0.9, 0.99, 1.0, 0.99, 0.2, 128, 128, 1),
    },
    "rot-mnist": {
        200: clser(0.75, 1.0, 0.999, 1.0, 0.99, 0.2, 128, 128, 1),
        500: clser(0.75, 1.0, 0.999, 1.0, 0.99, 0.2, 128, 128, 1),
        5120: clser(0.75, 1.0, 0.999, 1.0, 0.99, 0.2, 128, 128, 1),
    },
    "mnist-360": {
        200: clser(0.75, 1.0, 0.999, 1.0, 0.99, 0.2, 16, 16, 1),
        500: clser(1.25, 0.9, 0.99, 1.0, 0.99, 0.2, 32, 16, 1),
        1000: clser(0.75, 0.9, 0.99, 1.0, 0.99, 0.2, 128, 16, 1),
    },
    "seq-cifar10": {
        200: clser(0.15, 0.1, 0.999, 0.3, 0.999, 0.1, 32, 32, 50),
        500: clser(0.15, 0.1, 0.999, 0.9, 0.999, 0.1, 32, 32, 50),
        5120: clser(0.15, 0.8, 0.999, 1.0, 0.999, 0.1, 32, 32, 50),
    },
    "seq-tinyimg": {
        200: clser(0.1, 0.04, 0.999, 0.08, 0.999, 0.05, 32, 32, 50),
        500: clser(0.1, 0.05, 0.999, 0.08, 0.999, 0.05, 32, 32, 50),
        5120: clser(0.1, 0.07, 0.999, 0.08, 0.999, 0.05, 32, 32, 50),
    },
}
