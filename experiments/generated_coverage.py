"""How much of each class does a conditional generator cover? (MNIST 10 x 1, one seed)

    python -m experiments.generated_coverage --data-dir ../shared/data --steps 1000 --gan-lr 0.001

Trains `mergan` (or `dgm`) on MNIST 10 x 1 and compares, per class, four
ways to read the final generator against the real test set:

- solver: the method's own solver (continual, real current class + replay);
- generated: the MeRGAN authors' measure, the share of generated samples of
  the class that a classifier trained on real data labels right;
- trained on generated: a fresh `mlp` trained only on generated samples of
  every class, tested on real images (a sample set that covers the class
  teaches it; a narrow one is labelled right but teaches little);
- generated old + real last: a fresh `mlp` trained once on the solver
  protocol's data (generated classes 0-8, real class 9), no continual drift.

Also writes the solver's confusion matrix. Results go to
`experiments/results/generated_coverage_<method>-<variant>.{md,json}`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cljax import models, train
from cljax.benchmarks import scenarios
from cljax.methods.common import create_net, cross_entropy, predict
from cljax.outputs import report
from cljax.run import evaluate as evaluation
from experiments import rows as table_rows
from experiments.tuned import build_tuned


def fit_and_test(x, y, x_test, y_test, steps: int = 3000, seed: int = 0):
    """`(classify, per-class test accuracy)` of a fresh `mlp` trained by Adam 1e-3, batch 128."""
    net = create_net(models.make("mlp", 10), optax.adam(1e-3), jax.random.key(seed), x[:2])

    @jax.jit
    def step(net, xb, yb):
        def loss(p):
            return cross_entropy(net.apply_fn({"params": p}, xb, train=True), yb).mean()

        return net.apply_gradients(grads=jax.grad(loss)(net.params))

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        i = rng.integers(0, len(x), 128)
        net = step(net, x[i], y[i])
    return (lambda b: predict(net, b)), per_class(
        np.asarray(jnp.argmax(predict(net, x_test), -1)), y_test
    )


def all_tasks(split):
    """`(x, y)` of every task of `split` (`scenario.train` or `scenario.test`), concatenated."""
    xs, ys = zip(*[split(t) for t in range(10)], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def per_class(pred, y):
    """Percent of each class 0..9 of `y` that `pred` gets right."""
    return [round(100.0 * float((pred[y == c] == c).mean()), 1) for c in range(10)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--method", default="mergan", choices=["mergan", "dgm"])
    p.add_argument("--variant", default="jr", help="mergan: jr|ra; dgm: dgmw|dgma")
    p.add_argument("--steps", type=int, default=1000, help="iterations per task")
    p.add_argument("--gan-lr", type=float, default=1e-3, help="mergan only: Adam lr of G and D")
    p.add_argument("--per-class", type=int, default=3000, help="generated samples per class")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    train.log_tasks()

    scenario = scenarios.build("seq-mnist", args.data_dir, num_tasks=10)
    extra = {"variant": args.variant}
    if args.method == "mergan":
        extra.update(gan="mlp", g_lr=args.gan_lr, d_lr=args.gan_lr)
    method, config = build_tuned(scenario, args.method, None, steps=args.steps, **extra)
    start = time.perf_counter()
    res = train.run(method, scenario, train.RunConfig(seeds=(0,), **config))
    wall = time.perf_counter() - start
    state = res["state"]
    one = jax.tree.map(lambda a: a[0], state)

    x_test, y_test = all_tasks(scenario.test)
    x_train, y_train = all_tasks(scenario.train)
    x_test_in = np.asarray(scenario.input_fn(x_test, None, False))
    x_train_in = np.asarray(scenario.input_fn(x_train, None, False))
    solver_pred = np.concatenate(
        [
            np.asarray(jnp.argmax(method.predict(one, x_test[i : i + 1000]), -1))
            for i in range(0, len(x_test), 1000)
        ]
    )
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (y_test, solver_pred), 1)

    classify, real = fit_and_test(x_train_in, y_train, x_test_in, y_test)
    generated = evaluation.generated_accuracy(method, classify, 500)(
        state, jax.random.key(1), list(range(10))
    )[0]
    gx, gy = (np.asarray(a) for a in method.host.sample(one, jax.random.key(2), args.per_class))
    _, on_generated = fit_and_test(gx, gy, x_test_in, y_test)
    old = gy < 9
    _, protocol = fit_and_test(
        np.concatenate([gx[old], x_train_in[y_train == 9]]),
        np.concatenate([gy[old], y_train[y_train == 9]]),
        x_test_in,
        y_test,
    )
    rows = {
        "solver (continual, the method's)": per_class(solver_pred, y_test),
        "generated (authors' measure)": [round(float(a), 1) for a in generated],
        "fresh mlp trained on generated, all classes": on_generated,
        "fresh mlp trained on generated 0-8 + real 9": protocol,
        "fresh mlp trained on real (reference)": real,
    }

    name = f"{args.method}-{args.variant}"
    out = Path(args.out or f"experiments/results/generated_coverage_{name}")
    report.write_json(
        out.with_suffix(".json"),
        {"args": vars(args), "per_class": rows, "confusion": confusion.tolist(), "wall_s": wall},
    )
    lines = [
        f"# What the final {name} generator teaches: MNIST 10 x 1, seed 0\n",
        f"Command: `python -m experiments.generated_coverage --data-dir DATA --method {args.method} "
        f"--variant {args.variant} --steps {args.steps}"
        + (f" --gan-lr {args.gan_lr}`\n" if args.method == "mergan" else "`\n"),
        f"{table_rows.machine()}; training {wall:.0f} s.\n",
        "Per-class accuracy on the real MNIST test set (percent) after task 10. "
        f"Fresh classifiers: the `mlp`, Adam 1e-3, 3000 steps of 128, on {args.per_class} "
        "generated samples per class.\n",
        "| measure | " + " | ".join(str(c) for c in range(10)) + " | mean |",
        "|---|" + "---|" * 11,
    ]
    for label, values in rows.items():
        lines.append(
            f"| {label} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {np.mean(values):.2f} |"
        )
    lines += ["\nSolver confusion matrix (rows: true class, columns: predicted):\n", "```"]
    lines += [" ".join(f"{v:5d}" for v in row) for row in confusion] + ["```"]
    table_rows.write_table(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
