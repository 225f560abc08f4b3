"""Tuned settings of `xder` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Seq-CIFAR-100: the paper's rows (Mammoth's utils/best_args.py at tpami2023, ad4d390, the only
X-DER entries there). Seq-MNIST has no published tuning: ER's protocol (one epoch at batch
10, lr 0.1), alpha 0.3 and beta 0.8 (the Seq-CIFAR-100 values) and Mammoth HEAD's defaults
(`lambd` 0.05, 4 views, no past constraint, its BatchNorm handling), the settings of the
run beside HEAD in experiments/results/reference_runs/mammoth_head_seqmnist_more.md.
Not here: HEAD's Seq-CIFAR-100 config (models/config/xder.yaml: its `dp_weight` 3000, which
cljax does not implement, and lr x0.2 at the milestones)."""

from cljax.tuned import OURS_ER_MNIST, row, xder_cifar100

HEAD = "; Mammoth HEAD's X-DER defaults (lambd 0.05, 4 views, no past constraint, align_bn)"


def head_variant(name: str, **cifar100) -> dict:
    """`TUNED` of X-DER variant `name` as Mammoth HEAD tunes it: its models/config/NAME.yaml
    at Seq-CIFAR-100 buffer 500 (`cifar100`) with HEAD's xder dataset config (batch 32, 50
    epochs, lr x0.2 after 35 and 45, the replay minibatch equal to the batch), and Seq-MNIST
    on ER's protocol at lr 0.1 with alpha 0.3 and beta 0.8 (xder's Seq-CIFAR-100 values)."""
    source = (
        f"Mammoth HEAD (e75a491) models/config/{name}.yaml at buffer 500, with its "
        "datasets/configs/seq-cifar100/xder.yaml (batch 32, 50 epochs, x0.2 after 35 and 45)"
    )
    mnist = {"lr": 0.1, "batch_size": 10, "n_epochs": 1, "minibatch_size": 10}
    return {
        "seq-mnist": {
            b: row(OURS_ER_MNIST, **mnist, alpha=0.3, beta=0.8) for b in (200, 500, 5120)
        },
        "seq-cifar100": {
            500: {
                **xder_cifar100(0.03, minibatch_size=32, **cifar100)[500],
                "lr_gamma": 0.2,
                "source": source,
            }
        },
    }


PAPER = {"gamma": 0.85, "simclr_temp": 5.0, "simclr_batch_size": 64, "simclr_num_aug": 2}

TUNED = {
    "seq-mnist": {
        b: row(
            OURS_ER_MNIST + HEAD,
            lr=0.1,
            batch_size=10,
            n_epochs=1,
            minibatch_size=10,
            alpha=0.3,
            beta=0.8,
            lambd=0.05,
            simclr_num_aug=4,
            past_constraint=False,
            align_bn=True,
        )
        for b in (200, 500, 5120)
    },
    "seq-cifar100": {
        500: xder_cifar100(
            0.03, minibatch_size=32, alpha=0.3, beta=0.8, lambd=0.05, constr_eta=0.001,
            constr_margin=0.7, **PAPER,
        )[500],
        2000: xder_cifar100(
            0.03, minibatch_size=32, alpha=0.6, beta=0.9, lambd=0.05, constr_eta=0.01,
            constr_margin=0.2, **PAPER,
        )[2000],
    },
}  # fmt: skip
