"""Mammoth's ER and ours, step by step on the same batches: where do they part?

Runs Mammoth's own `models/er.py` (PyTorch, imported from a checkout of its
paper-era code, e.g. commit 5dc82be) and cljax's `er.train_step` (JAX) on
Seq-MNIST from the same initial weights on the same batch order, one epoch a
task, and prints the largest parameter difference as they go and the accuracy
of both after each task.

`--draws ours` (the default) replaces Mammoth's replay draws (`np.random.choice`)
and reservoir slots by the ones our step makes with its keys, so the two must
stay equal to float rounding if the steps are the same. `--draws mammoth` lets
Mammoth draw its own (then only Mammoth's accuracy is compared across runs).
`--last-batch short` gives each epoch the short last batch of Mammoth's PyTorch
loader (12,665 items at batch 128: 98 batches and one of 121), `drop` leaves it
out; the short step needs `--draws mammoth`.

Needs PyTorch and a Mammoth checkout (not dependencies of cljax)::

    pip install torch
    python -m experiments.mammoth_side_by_side --mammoth PATH/TO/mammoth --data-dir DATA

Session 27 found with it why ER at batch 128 (and HAL, GSS at its settings) ended
about 4 points below Mammoth: the short last batch (docs/results.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from argparse import Namespace

import jax
import jax.numpy as jnp
import numpy as np

from cljax.benchmarks.data import idx as idx_data
from cljax.benchmarks.scenarios import scaled_input
from cljax.core import buffer as buffer_lib
from cljax.methods import er
from cljax.models.backbones import MLP


def load_mammoth(path: str):
    """Mammoth's ER class, its MNIST MLP and its buffer module (imported from `path`)."""
    try:
        import torch
    except ImportError:
        sys.exit("this comparison needs PyTorch: pip install torch")
    if not os.path.isfile(os.path.join(path, "models", "er.py")):
        sys.exit(f"{path} is not a Mammoth checkout (no models/er.py); pass --mammoth DIR")
    os.chdir(path)  # its models/__init__.py lists the folder `models`
    sys.path[:0] = [path, os.path.join(path, "stubs")]
    import utils.buffer as mbuf
    from backbone.MNISTMLP import MNISTMLP
    from models.er import Er

    torch.set_num_threads(1)
    return torch, Er, MNISTMLP, mbuf


class Draws:
    """Stands in for `np` in Mammoth's `utils/buffer.py`: `np.random` is this object, whose
    `choice` answers with our draws (with `ours`); `np.random.randint` and every other name
    are numpy's."""

    def __init__(self, ours: bool):
        self.ours, self.picked, self.slots = ours, None, []
        self.queue = []  # several draws a step (DER++): answered in turn, before `picked`

    @property
    def random(self):
        return self

    def __getattr__(self, name):
        return getattr(np.random if name in ("randint",) else np, name)

    def reservoir(self, num_seen, size):  # replaces utils.buffer.reservoir
        return self.slots.pop(0)

    def choice(self, n, size, replace):
        if not self.ours:
            return np.random.choice(n, size=size, replace=replace)
        picked = self.queue.pop(0) if self.queue else self.picked
        assert len(picked) == size and picked.max() < n, (len(picked), size, n)
        return picked


def task_mean(pred, y) -> float:
    """Class-IL accuracy averaged over the two-class tasks seen (Mammoth's measure)."""
    return float(
        np.mean(
            [100 * (pred[y // 2 == u] == y[y // 2 == u]).mean() for u in range(y.max() // 2 + 1)]
        )
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mammoth", required=True, help="a checkout of Mammoth's paper-era code")
    p.add_argument("--data-dir", required=True, help="the folder with MNIST's IDX files")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--minibatch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--buffer-size", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", choices=("ours", "mammoth"), default="ours")
    p.add_argument("--last-batch", choices=("drop", "short"), default="drop")
    args = p.parse_args(argv)
    if args.last_batch == "short" and args.draws == "ours":
        p.error("--last-batch short runs Mammoth alone: pass --draws mammoth")
    x_tr, y_tr, x_te, y_te = idx_data.load("mnist", args.data_dir, False)
    torch, Er, MNISTMLP, mbuf = load_mammoth(os.path.abspath(args.mammoth))
    B, MB, cap = args.batch_size, args.minibatch_size, args.buffer_size

    method = er.make(
        model=MLP(), input_fn=scaled_input(255.0), lr=args.lr, buffer_size=cap, minibatch_size=MB
    )
    state = method.init(jax.random.key(args.seed), x_tr[:1])
    step = jax.jit(method.train_step)
    net = MNISTMLP(784, 10)
    layers = [net.fc1, net.fc2, net.classifier]
    with torch.no_grad():  # Mammoth's network from our initial weights
        for i, lin in enumerate(layers):
            dense = state.net.params[f"Dense_{i}"]
            lin.weight.copy_(torch.tensor(np.asarray(dense["kernel"]).T))
            lin.bias.copy_(torch.tensor(np.asarray(dense["bias"])))
    hp = Namespace(lr=args.lr, buffer_size=cap, minibatch_size=MB)
    model = Er(net, torch.nn.functional.cross_entropy, hp, None)
    model.device = model.buffer.device = torch.device("cpu")
    draws = Draws(args.draws == "ours")
    np.random.seed(args.seed)
    mbuf.np = draws
    if draws.ours:
        mbuf.reservoir = draws.reservoir

    def gap() -> float:
        out = 0.0
        for i, lin in enumerate(layers):
            dense = state.net.params[f"Dense_{i}"]
            w = np.asarray(dense["kernel"]).T - lin.weight.detach().numpy()
            b = np.asarray(dense["bias"]) - lin.bias.detach().numpy()
            out = max(out, float(np.abs(w).max()), float(np.abs(b).max()))
        return out

    def observe(sel):
        xt = torch.tensor(x_tr[sel].astype(np.float32) / 255.0)
        model.observe(xt, torch.tensor(y_tr[sel].astype(np.int64)), xt)

    rng, key, s = np.random.default_rng(args.seed), jax.random.key(1000 + args.seed), 0
    for t in range(5):
        order = rng.permutation(np.flatnonzero((y_tr >= 2 * t) & (y_tr < 2 * t + 2)))
        for b in range(len(order) // B):
            sel = order[b * B : (b + 1) * B]
            if draws.ours:  # the draws our step makes with this step's key (er.train_step)
                k = jax.random.fold_in(key, s)
                _, k_buf, k_add = jax.random.split(k, 3)
                k_idx = jax.random.split(k_buf)[0]  # common.replay_batch's first split
                i, valid = buffer_lib.sample_indices(state.buffer, k_idx, MB)
                draws.picked = np.asarray(i)[np.asarray(valid)]
                n = int(state.buffer.num_seen) + np.arange(B)
                j = np.asarray(jax.random.randint(k_add, (B,), 0, jnp.asarray(n + 1), jnp.int32))
                raw = np.where(n < cap, n, j)  # before "the later of two wins": Mammoth's loop
                draws.slots = [int(v) if v < cap else -1 for v in raw]
                batch = {"x": jnp.asarray(x_tr[sel]), "y": jnp.asarray(y_tr[sel].astype(np.int32))}
                state, _ = step(state, batch, k)
            observe(sel)
            s += 1
            if draws.ours and s % 50 == 0:
                print(f"step {s}: largest parameter difference {gap():.3g}", flush=True)
        if args.last_batch == "short" and len(order) % B:
            observe(order[len(order) // B * B :])
        seen = y_te < 2 * t + 2
        xt = x_te[seen].astype(np.float32) / 255.0
        theirs = net(torch.tensor(xt)).argmax(1).numpy()
        line = f"after task {t + 1}: Mammoth {task_mean(theirs, y_te[seen]):.2f} (mean over tasks)"
        if draws.ours:
            ours = np.asarray(jnp.argmax(MLP().apply({"params": state.net.params}, xt), -1))
            line += (
                f", ours {task_mean(ours, y_te[seen]):.2f}; predictions agree on "
                f"{100 * (ours == theirs).mean():.2f}%, largest parameter difference {gap():.3g}"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
