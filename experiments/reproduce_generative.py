"""Generative replay on class-incremental MNIST, one class per task (MNIST 10 x 1).

    python -m experiments.reproduce_generative --data-dir ../shared/data --seeds 3 --steps 4001

Runs DGR and MeRGAN (JR and RA) with their tuned settings (cljax/tuned/<method>.py),
every seed of a row in one vmapped program, and writes a markdown table of A5
and A10 (average accuracy over the classes seen after 5 and 10 classes,
mean +- std over seeds) beside the DGM paper's table (DGR 90.39 / 85.40,
MeRGAN 98.19 / 97.00), with the budget (`--steps` generator iterations per
task, `--gan` architecture), the wall time and the machine, plus the sample
grid after the last task of each row. The papers' budgets are 2000 (DGR) and
4001 (MeRGAN) iterations per task: `--steps 0` uses them. Rows already in the
JSON file with the same budget are skipped. `--rows dgmw dgma` runs Dynamic
Generative Memory (published 98.75 / 96.46 and 99.17 / 97.92; the paper trains
101 epochs a task, `--steps 0` uses that; `dgmw-joint`, `dgma-joint`: DGM with
its solver trained in the critic's step, our first version). An interrupted row
goes on from its last checkpoint (after a task, or after a chunk of a task at
most 10 minutes earlier) with the same command plus `--resume`. A row in the
JSON file at the same budget but with fewer seeds runs only the missing ones and
joins them (`report.merge_seeds`): `--seeds 2` then `--seeds 3` adds a seed at
a time, for rows that take hours a seed on a CPU. `--valid-fraction 0.15` holds
out 15% of each task's training data, as the DGM authors' code does, and adds
the number that code reports: each task's test accuracy at its checkpoint (of
20 a task) of best validation accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import shutil
from pathlib import Path

import jax
import numpy as np

from cljax import train
from cljax.benchmarks import scenarios
from cljax.methods.common import predict
from cljax.models import gan as gan_models
from cljax.run import evaluate as evaluation
from cljax.run import sharding
from experiments import rows as table_rows
from experiments.tuned import build_tuned, planned_hparams, run_tuned

CONDITIONAL = ("mergan", "dgm")  # generators that take a class: A_n (generated) applies
PUBLISHED = {
    "dgr": (90.39, 85.40),
    "mergan-jr": (98.19, 97.00),
    "mergan-ra": (98.19, 97.00),
    "mergan-jr-s5": (98.19, 97.00),
    "mergan-ra-s5": (98.19, 97.00),
    "dgmw": (98.75, 96.46),
    "dgma": (99.17, 97.92),
}
ROWS = {
    "dgr": ("dgr", {}),
    "mergan-jr": ("mergan", {"variant": "jr"}),
    "mergan-ra": ("mergan", {"variant": "ra"}),
    # the solver steps on each of the 5 critic batches, as DGM's solver steps with its critic
    "mergan-jr-s5": ("mergan", {"variant": "jr", "solver_steps": 5}),
    "mergan-ra-s5": ("mergan", {"variant": "ra", "solver_steps": 5}),
    "dgmw": ("dgm", {"variant": "dgmw"}),
    "dgma": ("dgm", {"variant": "dgma"}),
    # DGM's solver trained in the critic's step: one update an iteration (dgm.py)
    "dgmw-joint": ("dgm", {"variant": "dgmw", "cls_steps": "joint"}),
    "dgma-joint": ("dgm", {"variant": "dgma", "cls_steps": "joint"}),
}
OUT = "experiments/results/generative_mnist10x1"
DEFAULT_ROWS = ["dgr", "mergan-jr", "mergan-ra"]


def reference_classifier(scenario, model: str = "mlp", epochs: int = 3):
    """`(classify, test accuracy)`: the `cnn` trained on every class's real training data.

    The stand-in for the MeRGAN authors' pretrained MNIST classifier, which
    labels generated samples in their evaluation (`generated_accuracy`).
    """
    method, config = build_tuned(
        scenario, "joint", None, model=model, lr=0.1, epochs=epochs, batch_size=64
    )
    res = train.run(method, scenario, dataclasses.replace(config, seeds=(0,)))
    net = jax.tree.map(lambda a: a[0], res["state"].net)
    return (lambda x: predict(net, x)), res["final_average_accuracy"]["class-il"]["mean"]


def generated_a_n(scenario, classify, per_class: int = 500):
    """`after_task` for `run_tuned`: the MeRGAN authors' evaluation after every task.

    Per seed, the mean over the classes seen of `evaluation.generated_accuracy`
    (the share of `per_class` generated samples of each class that the
    reference classifier labels as that class), percent.
    """

    def make(method):
        accuracy = evaluation.generated_accuracy(method, classify, per_class)

        def after_task(t, state):
            seen = sorted(c for j in range(t + 1) for c in scenario.classes(j))
            return accuracy(state, jax.random.key(t), seen).mean(1).tolist()

        return after_task

    return make


def selection_accuracy(scenario, valid, eval_batch: int = 1000):
    """`after_chunk` for `run_tuned`: per seed, `[validation, test]` class-IL accuracy of the
    mid-task solver (percent; the mean over the tasks seen of each task's accuracy among the
    classes seen, as the driver's A_n), the two numbers the DGM authors' code logs every 5
    epochs to report the test accuracy at the best validation accuracy."""
    mesh = sharding.make_mesh()  # all devices, as the runs this measures
    splits = [
        evaluation.stack_tests(sc, eval_batch, mesh)
        for sc in (dataclasses.replace(scenario, test=valid), scenario)
    ]

    def make(method):
        evaluate = evaluation.make_evaluator(method, splits[0][3], mesh)

        def after_chunk(t, c, state):
            del c
            out = []
            active = np.arange(scenario.num_tasks) <= t
            for (x, y, v), masks, counts, _ in splits:
                seen = evaluation.class_il_outputs(masks, t, "seen")  # the DGM authors' code
                cil, _ = evaluate(state, x, y, v, active, seen, masks)
                out.append(evaluation.percent_seen(cil, counts, t).mean(1))
            return [[float(va), float(te)] for va, te in zip(*out, strict=True)]

        return after_chunk

    return make


def best_validation_a_n(res):
    """Per seed and task, the test accuracy at the chunk of best validation accuracy (the
    first best, as the official code keeps the first); None without `after_chunk`."""
    chunks = res.get("after_chunk")
    if not chunks or any(task is None for task in chunks):
        return None
    out = np.zeros((len(res["seeds"]), len(chunks)))
    for t, task in enumerate(chunks):
        per_seed = np.asarray(task, float).transpose(1, 0, 2)  # (seeds, chunks, [valid, test])
        for s, series in enumerate(per_seed):
            out[s, t] = series[int(np.argmax(series[:, 0])), 1]
    return out


def _pm(values) -> str:
    return f"{np.mean(values):.2f} +- {np.std(values):.2f}"


def table(rows) -> str:
    lines = [
        "| method | A5 (solver) | A10 (solver) | A5 (generated) | A10 (generated) | A5 / A10 published "
        "| A5 / A10 (solver, best validation) | iterations per task | GAN | GAN lr | seeds "
        "| wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, res in rows.items():
        a = res["A_n"]["class-il"]
        a5 = f"{a['mean'][4]:.2f} +- {a['std'][4]:.2f}"
        a10 = f"{a['mean'][9]:.2f} +- {a['std'][9]:.2f}"
        gen = res.get("after_task")
        # a run resumed from a checkpoint of before 2026-11-24 lacks the tasks before the stop
        g5, g10 = (_pm(gen[t]) if gen and None not in gen[t] else "n/a" for t in (4, 9))
        budget = res["steps_per_task"] or "{} epochs (~{})".format(
            res["hparams"]["n_epochs"],
            res["timing"]["steps"] // (res["tasks_done"] * len(res["seeds"])),
        )
        pub = "{} / {}".format(*PUBLISHED[row.removesuffix("-joint")])
        best = best_validation_a_n(res)
        sel = "n/a" if best is None else f"{_pm(best[:, 4])} / {_pm(best[:, 9])}"
        lines.append(
            f"| {row} | {a5} | {a10} | {g5} | {g10} | {pub} | {sel} | {budget} | "
            f"{res['hparams'].get('gan', 'mlp')} | "
            f"{res['hparams']['g_lr']} | "
            f"{len(res['seeds'])} | {res['timing']['total_s']:.0f} |"
        )
    return "\n".join(lines)


def command_line(args, rows=None, seeds=None) -> str:
    """The command that reproduces `rows` (default: `args.rows`) with `seeds` seeds (default:
    `args.seeds`) at `args`' budget (flags left at their defaults are left out)."""
    rows = list(args.rows if rows is None else rows)
    seeds = args.seeds if seeds is None else seeds
    cmd = f"python -m experiments.reproduce_generative --data-dir DATA --seeds {seeds} "
    cmd += f"--steps {args.steps}"
    if rows != list(DEFAULT_ROWS):
        cmd += " --rows " + " ".join(rows)
    if any(ROWS[r][0] != "dgm" for r in rows):  # DGM has its own generator and lr
        cmd += f" --gan {args.gan}" + (f" --gan-lr {args.gan_lr}" if args.gan_lr else "")
    if getattr(args, "valid_fraction", 0.0):
        cmd += f" --valid-fraction {args.valid_fraction}"
    if args.out != OUT:
        cmd += f" --out {args.out}"
    return cmd


def commands(args, rows) -> str:
    """The header's command: one for the whole table, or one per row where the rows were run
    with different seeds or budgets (a row run alone later, or seeds added to one row)."""
    runs = {
        (len(r["seeds"]), r["requested_steps"], r.get("requested_valid_fraction", 0.0))
        for r in rows.values()
    }
    if runs == {(args.seeds, args.steps, args.valid_fraction)} and set(rows) == set(args.rows):
        return f"Command: `{command_line(args)}`\n\n"
    lines = ["Commands, one per row:\n"]
    for row, res in rows.items():
        hp = res["hparams"]
        gan_lr = None if hp["g_lr"] == 1e-4 else hp["g_lr"]  # 1e-4: the papers' (no flag)
        run = argparse.Namespace(
            **{
                **vars(args),
                "steps": res["requested_steps"],
                "valid_fraction": res.get("requested_valid_fraction", 0.0),
                "gan": hp.get("gan", "mlp"),
                "gan_lr": gan_lr,
            }
        )
        lines.append(f"- {row}: `{command_line(run, [row], len(res['seeds']))}`")
    return "\n".join(lines) + "\n\n"


def parser() -> argparse.ArgumentParser:
    """The command line (`main`'s options)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=0, help="iterations per task (0: the papers')")
    p.add_argument("--gan", default="mlp", choices=gan_models.ARCHS)
    p.add_argument(
        "--gan-lr",
        type=float,
        default=None,
        help="Adam lr of generator and critic (default: the papers' 1e-4)",
    )
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    p.add_argument("--out", default=OUT)
    p.add_argument(
        "--valid-fraction",
        type=float,
        default=0.0,
        help="hold out this share of each task's training data (0.15 in the DGM authors' code) "
        "and report the test accuracy at each task's checkpoint of best validation accuracy "
        "(measured after each twentieth of the task), as their code reports it",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted row from its checkpoint in runs/OUT-ROW-seeds-S (OUT: the name of --out)",
    )
    return p


def row_settings(args, row: str) -> tuple[str, dict]:
    """`(method, overrides)` of table row `row` at `args`' GAN settings."""
    name, extra = ROWS[row]
    if name != "dgm":  # DGM has its own generator (dgm.py) and its paper's lr
        extra = {**extra, "gan": args.gan, "g_lr": args.gan_lr, "d_lr": args.gan_lr}
    return name, extra


def run_row(args, scenario, row, seeds, new, after_chunk, reference):
    """Results of table row `row` on `seeds`, with the budget `args` asked for.

    The work dir is `runs/OUT-ROW-seeds-S` (`--resume` goes on from its checkpoint); a `new`
    row (not one gaining seeds) copies its sample grid beside the table. `reference()` gives
    `(classify, accuracy)` of the reference classifier, for conditional generators.
    """
    name, extra = row_settings(args, row)
    # one work dir per table, row and seeds run: a fresh run of another table never deletes
    # this one's, and seeds added later do not meet the checkpoints of the earlier ones
    seed_names = "-".join(map(str, seeds))
    workdir = Path("runs") / f"{Path(args.out).name}-{row}-seeds-{seed_names}"
    print(f"{row}: seeds {list(seeds)}, work dir {workdir}", flush=True)
    if not args.resume:
        shutil.rmtree(workdir, ignore_errors=True)
    after_task = None
    if name in CONDITIONAL:
        after_task = generated_a_n(scenario, reference()[0])
    res = run_tuned(
        scenario,
        name,
        None,
        seeds,
        workdir,
        after_task,
        resume=args.resume,
        after_chunk=after_chunk,
        steps=args.steps or None,
        class_il="seen",  # A_n over the classes seen, as the DGM authors' code and our rows
        **extra,
    )
    grid = workdir / "samples" / "task10.png"
    if grid.exists() and new:  # a row that gained seeds keeps its first run's grid
        shutil.copy(grid, f"{args.out}-{row}-samples.png")
    res["requested_steps"] = args.steps
    res["requested_valid_fraction"] = args.valid_fraction
    if after_task is not None:
        res["reference_classifier_accuracy"] = reference()[1]
    return res


def header(args, rows) -> str:
    """The markdown table's title, commands, machine and protocol."""
    references = [r["reference_classifier_accuracy"] for r in rows.values() if r.get("after_task")]
    return (
        "# Generative replay on MNIST 10 x 1 (one class per task): cljax vs the DGM paper\n\n"
        + commands(args, rows)
        + f"{table_rows.machine()}.\n\n"
        "A_n (solver): class-IL accuracy on the real test set of the n classes seen after n tasks (percent, "
        "mean +- std over seeds), of the solver trained on real current data and replayed "
        "previous classes (this issue's protocol, as for DGM whose solver is its discriminator).\n\n"
        "A_n (generated): the MeRGAN authors' evaluation (their code's `--test` mode): a classifier "
        "trained on real data labels 500 generated samples of each of the n classes seen; the "
        "share labelled as the class they were drawn for, averaged over the n classes. "
        "Conditional generators only (DGR's is unconditional: n/a). The reference classifier is "
        "the `mlp` trained jointly on all of MNIST for 3 epochs"
        + (f" ({references[0]:.2f}% on the real test set)" if references else "")
        + ".\n\n"
        + (
            "Rows `-joint`: DGM with its solver (the discriminator's class head) trained in "
            "the critic's step, one update an iteration (the method's `cls_steps=joint`, our first "
            "version); the others as the official code, one solver step per task seen before "
            "the critic's.\n\n"
            if any(r.endswith("-joint") for r in rows)
            else ""
        )
        + (
            "Rows `-s5`: MeRGAN's solver takes a step on each of the iteration's 5 critic "
            "batches (`solver_steps=5`) instead of one; the GAN is trained alike (same keys), "
            "so A_n (generated) is the plain row's.\n\n"
            if any(r.endswith("-s5") for r in rows)
            else ""
        )
        + "Published: DGM paper (Ostapenko et al. 2019), MNIST table. Its MeRGAN row "
        "is, as far as we can tell, the MeRGAN paper's result, which the authors' code measures as "
        "A_n (generated).\n\n"
    )


def main(argv=None):
    args = parser().parse_args(argv)
    train.log_tasks()

    out_json, out_md = Path(args.out + ".json"), Path(args.out + ".md")
    rows = table_rows.load(out_json)
    scenario = scenarios.build("seq-mnist", args.data_dir, num_tasks=10)
    full, after_chunk = scenario, None  # the reference classifier learns all training data
    if args.valid_fraction:
        scenario, valid = scenarios.split_validation(scenario, args.valid_fraction)
        after_chunk = selection_accuracy(scenario, valid)
    reference = functools.cache(lambda: reference_classifier(full))  # trained once, if asked
    for row in args.rows:
        name, extra = row_settings(args, row)
        done = rows.get(row)
        if done:
            done = {**done, "hparams": table_rows.with_defaults(name, done["hparams"])}
        planned = planned_hparams(scenario, name, None, steps=args.steps or None, **extra)
        same = bool(done) and (
            done["requested_steps"],
            done.get("requested_valid_fraction", 0.0),
            done["hparams"],
        ) == (args.steps, args.valid_fraction, planned)

        def run(todo, row=row, same=same):
            return run_row(args, scenario, row, todo, not same, after_chunk, reference)

        res = table_rows.complete(row, done, range(args.seeds), run, same)
        if res is None:
            continue
        rows = table_rows.save(out_json, {row: res}, rows)
        a = res["A_n"]["class-il"]["mean"]
        print(f"{row}: A5 {a[4]:.2f} A10 {a[9]:.2f} ({res['timing']['total_s']:.0f}s)", flush=True)
    table_rows.write_table(out_md, header(args, rows) + table(rows) + "\n", out_json)
    print(out_md.read_text())


if __name__ == "__main__":
    main()
