"""Mammoth's online EWC and ours, side by side on Perm-MNIST: where do they part?

Runs Mammoth's own `models/ewc_on.py` (`EwcOn`: its `observe`, `penalty` and
`end_task`, PyTorch, imported from a checkout of its paper-era code, e.g. commit
5dc82be) and cljax's `ewc_on` (JAX) from the same initial MLP weights on the same
permuted batches (cljax's per-seed pixel maps of perm-mnist, each task's one map for
its training and its test images), one epoch a task with the short last batch of
Mammoth's `DataLoader` (60,000 items at batch 128: 468 batches and one of 96), and
prints per task: the largest parameter difference, both penalties before the task
ends, both Fishers (sum, max, largest difference) and anchors after it, and both
models' domain-IL accuracy (argmax over the 10 outputs) on every task seen.

Mammoth's `end_task` reads `dataset.train_loader`; it is given the task's items in
batches of `--batch-size` (shuffled: its loader's), so it divides its Fisher by
`len(train_loader) * batch_size` (60,032) as it does in a run. Its per-item loop is
its own code, the slow part here (30-190 s a task on one core beside other jobs).
`--resync` gives Mammoth's network our parameters just before each `end_task`, so
both Fishers and anchors are taken at one point (their sums then differ by the ratio
60,032 / 60,000); `--every N` prints the parameter gap every N steps.

Needs PyTorch, torchvision (Mammoth's `models/__init__.py` imports every dataset)
and a Mammoth checkout (not dependencies of cljax); GEM's `quadprog` is stubbed if
missing (GEM is not run). On these machines see shared/NOTES-STACK.md's Mammoth section
(torchvision 0.28 needs its two `register_fake` decorators made conditional)::

    git -C MIRROR archive 5dc82be | tar -x -C /tmp/mammoth5dc
    python -m experiments.mammoth_ewc_side_by_side --mammoth /tmp/mammoth5dc \\
        --data-dir /work/shared/data --tasks 4

`--tasks 20` runs the whole benchmark (about an hour with Mammoth's loop; 40 minutes
with that loop vmapped in a scratch copy, beside other jobs). Issue 46
(item 6): experiments/results/ewc_on_perm_side_by_side.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from argparse import Namespace

import jax
import jax.numpy as jnp
import numpy as np

from cljax.benchmarks.data import idx as idx_data
from cljax.benchmarks.scenario import apply_maps, domain_maps
from cljax.benchmarks.scenarios import scaled_input
from cljax.methods import ewc_on
from cljax.models.backbones import MLP


def load_mammoth(path: str):
    """Mammoth's `EwcOn` class and its MNIST MLP (imported from `path`)."""
    try:
        import torch
    except ImportError:
        sys.exit("this comparison needs PyTorch: pip install torch")
    if not os.path.isfile(os.path.join(path, "models", "ewc_on.py")):
        sys.exit(f"{path} is not a Mammoth checkout (no models/ewc_on.py); pass --mammoth DIR")
    os.chdir(path)  # its models/__init__.py lists the folder `models`
    sys.path[:0] = [path, os.path.join(path, "stubs")]
    try:
        import quadprog  # noqa: F401  (GEM's; Mammoth's models/__init__ imports every model)
    except ImportError:
        sys.modules["quadprog"] = types.ModuleType("quadprog")
    try:
        from backbone.MNISTMLP import MNISTMLP
        from models.ewc_on import EwcOn
    except ImportError as err:
        sys.exit(f"importing Mammoth failed ({err}); it needs torchvision importable")
    torch.set_num_threads(1)
    return torch, EwcOn, MNISTMLP


def flat_params(params) -> np.ndarray:
    """Our MLP's parameters (or a tree like them) in Mammoth's `get_params()` order: per layer
    the weight (out, in) row-major, then the bias."""
    parts = []
    for i in range(3):
        dense = params[f"Dense_{i}"]
        parts += [np.asarray(dense["kernel"]).T.ravel(), np.asarray(dense["bias"]).ravel()]
    return np.concatenate(parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mammoth", required=True, help="a checkout of Mammoth's paper-era code")
    p.add_argument("--data-dir", required=True, help="the folder with MNIST's IDX files")
    p.add_argument("--tasks", type=int, default=4, help="tasks run (perm-mnist has 20)")
    p.add_argument("--batch-size", type=int, default=128, help="best_args: 128")
    p.add_argument("--lr", type=float, default=0.1, help="best_args: 0.1")
    p.add_argument("--e-lambda", type=float, default=0.7, help="best_args: 0.7")
    p.add_argument("--gamma", type=float, default=1.0, help="best_args: 1.0")
    p.add_argument("--n-epochs", type=int, default=1, help="best_args: 1")
    p.add_argument("--seed", type=int, default=0, help="draws the maps, the weights, the order")
    p.add_argument("--fisher-items", type=int, default=None, help="only the first N (quick)")
    p.add_argument(
        "--resync",
        action="store_true",
        help="copy our parameters into Mammoth's network before each end_task, so both Fishers "
        "and anchors are taken at the same point (the drift of float rounding restarts there)",
    )
    p.add_argument("--every", type=int, default=0, help="print the gap every N steps (0: no)")
    args = p.parse_args(argv)
    x_tr, y_tr, x_te, y_te = idx_data.load("mnist", args.data_dir, False)
    torch, EwcOn, MNISTMLP = load_mammoth(os.path.abspath(args.mammoth))
    B = args.batch_size
    src, keep = domain_maps("perm-mnist", args.seed, 20, x_tr.shape[1:])

    method = ewc_on.make(
        model=MLP(),
        input_fn=scaled_input(255.0),
        lr=args.lr,
        e_lambda=args.e_lambda,
        gamma=args.gamma,
    )
    state = method.init(jax.random.key(args.seed), x_tr[:1])
    step = jax.jit(method.train_step)
    end_task = jax.jit(lambda s, data, k: method.end_task(s, None, data, k))
    net = MNISTMLP(784, 10)
    layers = [net.fc1, net.fc2, net.classifier]
    with torch.no_grad():  # Mammoth's network from our initial weights
        for i, lin in enumerate(layers):
            dense = state.net.params[f"Dense_{i}"]
            lin.weight.copy_(torch.tensor(np.asarray(dense["kernel"]).T))
            lin.bias.copy_(torch.tensor(np.asarray(dense["bias"])))
    hp = Namespace(
        lr=args.lr, e_lambda=args.e_lambda, gamma=args.gamma, batch_size=B, n_epochs=args.n_epochs
    )
    model = EwcOn(net, torch.nn.functional.cross_entropy, hp, None)
    model.device = torch.device("cpu")
    torch.manual_seed(args.seed)

    def gap() -> float:
        return float(np.abs(flat_params(state.net.params) - theirs_params()).max())

    def theirs_params() -> np.ndarray:
        return net.get_params().detach().numpy()

    def ours_penalty() -> float:
        d = flat_params(state.net.params) - flat_params(state.anchor)
        return float(
            np.sum(flat_params(state.fisher).astype(np.float64) * d.astype(np.float64) ** 2)
        )

    def accuracies(t):
        """Per task seen: (Mammoth's, ours, agreement of the predictions), in %."""
        out = []
        for j in range(t + 1):
            xj = apply_maps(x_te, src[j], keep[j]).astype(np.float32) / 255.0
            with torch.no_grad():
                net.eval()
                pm = net(torch.tensor(xj)).argmax(1).numpy()
                net.train()
            po = np.asarray(jnp.argmax(MLP().apply({"params": state.net.params}, xj), -1))
            out.append(
                (100 * (pm == y_te).mean(), 100 * (po == y_te).mean(), 100 * (pm == po).mean())
            )
        return np.array(out)

    rng, key, s = np.random.default_rng(args.seed), jax.random.key(1000 + args.seed), 0
    print(
        f"seed {args.seed}, batch {B}, lr {args.lr}, e_lambda {args.e_lambda}, "
        f"gamma {args.gamma}, epochs {args.n_epochs}; initial gap {gap():.3g}",
        flush=True,
    )
    rows = []
    for t in range(args.tasks):
        start = time.perf_counter()
        x_t = apply_maps(x_tr, src[t], keep[t])  # uint8, this task's fixed permutation
        xf = torch.tensor(x_t.astype(np.float32) / 255.0)
        yl = torch.tensor(y_tr.astype(np.int64))
        losses_m, losses_o = [], []
        for _ in range(args.n_epochs):
            order = rng.permutation(len(y_tr))
            for b in range(0, len(order), B):  # the short last batch as Mammoth's DataLoader
                sel = order[b : b + B]
                batch = {"x": jnp.asarray(x_t[sel]), "y": jnp.asarray(y_tr[sel].astype(np.int32))}
                state, aux = step(state, batch, jax.random.fold_in(key, s))
                losses_o.append(float(aux["loss"]))
                losses_m.append(model.observe(xf[sel], yl[sel], xf[sel]))
                s += 1
                if args.every and s % args.every == 0:
                    print(f"  step {s}: largest parameter difference {gap():.3g}", flush=True)
        gap_train = gap()
        if args.resync:
            with torch.no_grad():
                for i, lin in enumerate(layers):
                    dense = state.net.params[f"Dense_{i}"]
                    lin.weight.copy_(torch.tensor(np.asarray(dense["kernel"]).T))
                    lin.bias.copy_(torch.tensor(np.asarray(dense["bias"])))
        pen_m = float(model.penalty().item())
        pen_o = ours_penalty()
        # end_task: Mammoth's per-item loop over its (shuffled) loader, ours compiled
        n_f = args.fisher_items or len(y_tr)
        f_order = rng.permutation(len(y_tr))[:n_f]
        loader = [(xf[f_order[b : b + B]], yl[f_order[b : b + B]], None) for b in range(0, n_f, B)]
        t0 = time.perf_counter()
        model.end_task(Namespace(train_loader=loader))
        t_m = time.perf_counter() - t0
        t0 = time.perf_counter()
        sub = np.sort(f_order)
        state = end_task(
            state,
            (jnp.asarray(x_t[sub]), jnp.asarray(y_tr[sub])),
            jax.random.fold_in(jax.random.key(2000 + args.seed), t),
        )
        jax.block_until_ready(state.fisher)
        t_o = time.perf_counter() - t0
        fm = model.fish.detach().numpy().astype(np.float64)
        fo = flat_params(state.fisher).astype(np.float64)
        anchor_gap = float(np.abs(model.checkpoint.numpy() - flat_params(state.anchor)).max())
        acc = accuracies(t)
        row = dict(
            task=t + 1,
            gap=gap_train,
            anchor_gap=anchor_gap,
            loss_m=float(np.mean(losses_m)),
            loss_o=float(np.mean(losses_o)),
            pen_m=pen_m,
            pen_o=pen_o,
            fsum_m=fm.sum(),
            fsum_o=fo.sum(),
            fmax_m=fm.max(),
            fmax_o=fo.max(),
            fdiff=float(np.abs(fm - fo).max()),
            acc_m=acc[:, 0].mean(),
            acc_o=acc[:, 1].mean(),
            agree=acc[:, 2].mean(),
        )
        rows.append(row)
        print(
            f"task {t + 1}: largest parameter difference {gap_train:.3g} (anchors {anchor_gap:.3g});"
            f" mean CE Mammoth {row['loss_m']:.4f} ours {row['loss_o']:.4f} (Mammoth's is CE +"
            f" e_lambda * penalty); penalty before end_task Mammoth {pen_m:.6g} ours {pen_o:.6g}",
            flush=True,
        )
        print(
            f"  Fisher (running, after end_task): sum Mammoth {fm.sum():.6g} ours {fo.sum():.6g}"
            f" (ratio {fo.sum() / fm.sum():.6f}), max {fm.max():.6g} / {fo.max():.6g}, largest"
            f" difference {row['fdiff']:.3g}; end_task {t_m:.1f} s Mammoth, {t_o:.1f} s ours",
            flush=True,
        )
        print(
            f"  accuracy on tasks 1..{t + 1}: Mammoth {row['acc_m']:.2f}, ours {row['acc_o']:.2f}, "
            f"predictions agree on {row['agree']:.2f}%; per task Mammoth "
            + " ".join(f"{a:.2f}" for a in acc[:, 0])
            + " | ours "
            + " ".join(f"{a:.2f}" for a in acc[:, 1])
            + f" ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    print(
        "\n| task | largest param diff | penalty M / ours | Fisher sum M / ours | Fisher max M / "
        "ours | acc M / ours | agree |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['task']} | {r['gap']:.2e} | {r['pen_m']:.4g} / {r['pen_o']:.4g} | "
            f"{r['fsum_m']:.5g} / {r['fsum_o']:.5g} | {r['fmax_m']:.4g} / {r['fmax_o']:.4g} | "
            f"{r['acc_m']:.2f} / {r['acc_o']:.2f} | {r['agree']:.2f} |"
        )


if __name__ == "__main__":
    main()
