"""Tuned hyperparameters per benchmark, method and buffer size.

MNIST-family and CIFAR-10 values are those of the DER paper's appendix as kept
in Mammoth's `utils/best_args.py` (see ../shared/DESIGN.md). `-1` is the key of
methods without a buffer. seq-digits, seq-fashion-mnist, seq-cifar100 and
`joint` have no published tuning; their values are ours and say so.
"""

from __future__ import annotations

import re

from cljax import methods


def _row(lr, batch, epochs=1, mb=None, alpha=None, beta=None):
    out = {"lr": lr, "batch_size": batch, "n_epochs": epochs}
    for key, value in (("minibatch_size", mb), ("alpha", alpha), ("beta", beta)):
        if value is not None:
            out[key] = value
    return out


def _domain_mnist(der, derpp):
    """Perm-/Rot-MNIST rows: everything at batch 128, one epoch."""
    return {
        "sgd": {-1: _row(0.2, 128)},
        "joint": {-1: _row(0.2, 128)},  # ours: the paper does not list JOINT's lr
        "er": {b: _row(0.2, 128, mb=128) for b in (200, 500, 5120)},
        "der": {b: _row(lr, 128, mb=128, alpha=a) for b, (lr, a) in der.items()},
        "derpp": {b: _row(lr, 128, mb=128, alpha=a, beta=be) for b, (lr, a, be) in derpp.items()},
    }


SEQ_MNIST = {
    "sgd": {-1: _row(0.03, 10)},
    "joint": {-1: _row(0.03, 10)},  # ours: the paper does not list JOINT's lr
    "er": {200: _row(0.01, 10, mb=10), 500: _row(0.1, 10, mb=10), 5120: _row(0.1, 10, mb=10)},
    "der": {
        200: _row(0.03, 10, mb=10, alpha=0.2),
        500: _row(0.03, 10, mb=128, alpha=1.0),
        5120: _row(0.1, 10, mb=128, alpha=0.5),
    },
    "derpp": {
        200: _row(0.03, 10, mb=128, alpha=0.2, beta=1.0),
        500: _row(0.03, 10, mb=10, alpha=1.0, beta=0.5),
        5120: _row(0.1, 10, mb=64, alpha=0.2, beta=0.5),
    },
}

SEQ_CIFAR10 = {
    "sgd": {-1: _row(0.1, 32, 50)},
    "joint": {-1: _row(0.1, 32, 50)},
    "er": {b: _row(0.1, 32, 50, mb=32) for b in (200, 500, 5120)},
    "der": {b: _row(0.03, 32, 50, mb=32, alpha=0.3) for b in (200, 500, 5120)},
    "derpp": {
        200: _row(0.03, 32, 50, mb=32, alpha=0.1, beta=0.5),
        500: _row(0.03, 32, 50, mb=32, alpha=0.2, beta=0.5),
        5120: _row(0.03, 32, 50, mb=32, alpha=0.1, beta=1.0),
    },
}

# Ours, for the file-free demo benchmark (1437 training images): 10 epochs so
# that each task sees ~290 steps; values chosen by a small sweep.
SEQ_DIGITS = {
    "sgd": {-1: _row(0.03, 10, 10)},
    "joint": {-1: _row(0.03, 10, 10)},
    "er": {b: _row(0.1, 10, 10, mb=10) for b in (200, 500)},
    "der": {b: _row(0.03, 10, 10, mb=32, alpha=0.5) for b in (200, 500)},
    "derpp": {b: _row(0.03, 10, 10, mb=10, alpha=0.5, beta=0.5) for b in (200, 500)},
}


def _generative(steps_dgr, steps_mergan, gan="mlp", ra_weight=1e-3):
    """DGR (van de Ven's settings: Adam 1e-3, chunks of 128, 2000 iterations a task on MNIST)
    and MeRGAN (the authors' code: chunks of 64, 4001 iterations a task on MNIST, 8001 on
    SVHN); each step takes n_critic = 5 real chunks, so batch_size = 5 * chunk."""
    return {
        "dgr": {
            -1: {"lr": 1e-3, "batch_size": 5 * 128, "n_epochs": 1, "steps": steps_dgr, "gan": gan}
        },
        "mergan": {
            -1: {
                "lr": 1e-3,
                "batch_size": 5 * 64,
                "n_epochs": 1,
                "steps": steps_mergan,
                "gan": gan,
                "ra_weight": ra_weight,
            }
        },
    }


SEQ_MNIST.update(_generative(2000, 4001))
# DGM, the official code's MNIST settings: batches of 64, one critic step per
# generator step, 101 epochs a task, Adam 2e-3 with beta1 0.5 (s_max, lamb_G,
# gp_weight 1, reinit_d and aux_g in dgm.py).
SEQ_MNIST["dgm"] = {-1: {"batch_size": 64, "n_epochs": 101, "g_lr": 2e-3, "d_lr": 2e-3}}
SEQ_CIFAR10.update(_generative(2000, 8001, gan="dc", ra_weight=1e-2))
SEQ_DIGITS.update(
    {
        name: {
            -1: {
                "lr": 1e-2,
                "batch_size": 5 * 16,
                "n_epochs": 1,
                "steps": 300,
                "g_lr": 1e-3,
                "d_lr": 1e-3,
            }
        }
        for name in ("dgr", "mergan")
    }
)

# SVHN: ours for the rehearsal methods (CIFAR-10's values); the generative
# settings are the MeRGAN authors' (8001 iterations a task, RA weight 1e-2).
SEQ_SVHN = {**SEQ_CIFAR10, **_generative(2000, 8001, gan="dc", ra_weight=1e-2)}
# DGM on SVHN: the official code's cfg_svhn_dgmw.yml (151 epochs of 64, Adam 5e-4
# with beta1 0.5, s_max 1e4, lamb_G 0.001); published for DGMw only.
SEQ_SVHN["dgm"] = {
    -1: {"batch_size": 64, "n_epochs": 151, "g_lr": 5e-4, "d_lr": 5e-4, "lamb_g": 1e-3}
}

# Dynamically Expandable Representation. CPU-sized MNIST-family runs (ours): the
# `cnn` backbone, batch 32 plus 32 exemplars a step, two epochs, memory 500;
# mask settings chosen so pruning keeps well under half of each extractor.
# CIFAR-100 (B0, 10 steps): the official code's recipe (no masks; 10 warm-up
# epochs, lr x0.1 100 and 120 epochs after them; classifier re-training at lr 0.1,
# x0.1 after 15 of 30 epochs, weight decay 5e-4). B50 (`--base-classes 50`): its
# config, with 20 exemplars per class, the first task's 200 epochs of
# "pretraining" (x0.1 at 60, 120, 160, no warm-up) and re-training at lr 0.05
# for 50 epochs (x0.1 at 15 and 30).
_DYN_CPU = {
    "dyn_expand": {
        b: {"lr": 0.05, "batch_size": 32, "n_epochs": 2, "model": "cnn", "minibatch_size": 32}
        for b in (200, 500, 2000)
    }
}
_DYN_CIFAR100 = {
    "dyn_expand": {
        2000: {
            "lr": 0.1,
            "batch_size": 128,
            "n_epochs": 170,
            "weight_decay": 5e-4,
            "masks": False,
            "minibatch_size": 128,
            "warmup_epochs": 10,
            "milestones": (100, 120),
            "retrain_epochs": 30,
            "retrain_lr": 0.1,
            "retrain_milestones": (15,),
            "retrain_weight_decay": 5e-4,
            "temperature": 5.0,
        }
    }
}

_DYN_CIFAR100_B50 = {
    "dyn_expand": {
        2000: {
            **_DYN_CIFAR100["dyn_expand"][2000],
            "per_class": 20,
            "first_epochs": 200,
            "first_milestones": (60, 120, 160),
            "retrain_epochs": 50,
            "retrain_lr": 0.05,
            "retrain_milestones": (15, 30),
        }
    }
}

BEST_ARGS = {
    "seq-digits": {
        **SEQ_DIGITS,
        "dyn_expand": {
            b: {"lr": 0.05, "batch_size": 10, "n_epochs": 10, "model": "cnn", "minibatch_size": 10}
            for b in (200, 500)
        },
    },
    "seq-mnist": {**SEQ_MNIST, **_DYN_CPU},
    "seq-fashion-mnist": {**SEQ_MNIST, **_DYN_CPU},  # ours: no published tuning, MNIST's values
    "perm-mnist": _domain_mnist(
        der={200: (0.2, 1.0), 500: (0.2, 1.0), 5120: (0.2, 0.5)},
        derpp={200: (0.1, 1.0, 1.0), 500: (0.2, 1.0, 0.5), 5120: (0.2, 0.5, 1.0)},
    ),
    "rot-mnist": _domain_mnist(
        der={200: (0.2, 1.0), 500: (0.2, 0.5), 5120: (0.2, 0.5)},
        derpp={200: (0.1, 1.0, 0.5), 500: (0.2, 0.5, 1.0), 5120: (0.2, 0.5, 0.5)},
    ),
    "seq-cifar10": SEQ_CIFAR10,
    "seq-cifar100": {**SEQ_CIFAR10, **_DYN_CIFAR100},  # CIFAR-10's values, except dyn_expand
    "seq-cifar100-b50": {**SEQ_CIFAR10, **_DYN_CIFAR100_B50},
    "seq-svhn": SEQ_SVHN,
}


def get(benchmark: str, method: str, buffer_size: int | None) -> tuple[dict, int | None]:
    """`(hparams, tuned_buffer)`: the row for this buffer size, or the nearest tuned one.
    A benchmark with a larger first task (`NAME-bB`) without rows of its own takes NAME's."""
    table = BEST_ARGS.get(benchmark) or BEST_ARGS[re.sub(r"-b\d+$", "", benchmark)]
    rows = table.get(method)
    if rows is None:  # untuned: the method's defaults, batch 32, one epoch
        has_buffer = "buffer_size" in methods.get(method).HPARAMS
        extra = {"buffer_size": buffer_size} if has_buffer and buffer_size else {}
        return {"batch_size": 32, "n_epochs": 1, **extra}, None
    if -1 in rows:
        return dict(rows[-1]), None
    tuned = min(rows, key=lambda b: abs(b - buffer_size))
    return {**rows[tuned], "buffer_size": buffer_size}, tuned
