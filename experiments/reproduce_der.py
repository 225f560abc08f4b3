"""Reproduce the MNIST rows of Table 2 of the DER paper (Buzzega et al. 2020).

    python -m experiments.reproduce_der --data-dir ../shared/data --seeds 5

Runs SGD, JOINT, online EWC, SI, LwF, PNN, iCaRL, ER, GEM, A-GEM, FDR, GSS, HAL, MER, DER and
DER++ (buffers 200 / 500 / 5120) on Seq-MNIST
(class-IL and task-IL), Perm-MNIST and Rot-MNIST (domain-IL) with the tuned
settings of cljax/tuned/<method>.py, every seed of a row in one
vmapped program, and writes a markdown table of mean +- std beside the paper's
numbers (and Mammoth's measured ones where DESIGN.md has them). Rows already in
the JSON file keep their seeds and run only the missing ones (`--seeds 10` after
`--seeds 5` runs seeds 5-9 and joins them), so an interrupted run continues
where it stopped. `--rows pnn icarl` runs only those rows (`VARIANTS` adds rows that run a
method with other settings, e.g. `pnn-no-laterals`, Mammoth's PNN as it runs).
Perm-/Rot-MNIST draw their permutations or angles per seed (as Mammoth), each
seed through its own in the one vmapped program. Expected runtime on a 2-core CPU: about 5
minutes for Seq-MNIST, about 30 minutes each for Perm-MNIST and Rot-MNIST.

`--benchmarks seq-cifar10 seq-tinyimg` runs the table's ResNet-18 columns (the CIFAR-10
files and the `tiny-imagenet-200/` folder under `--data-dir`; every row tuned from the
DER paper's code, `cljax/tuned/`) into `experiments/results/der_table2_resnet18`: a GPU's
work, not run here (no GPU, no CIFAR files). Its size: a Seq-CIFAR-10 run is 5 tasks x
50 epochs x 313 steps (batch 32) = 78,250 steps, a Seq-TinyImageNet run 10 x 100 x 313 =
313,000; a DER++ ResNet-18 step takes 3.1 s on the 2-core CPU inside the scanned task
(`experiments/results/conv_steps.md`), about 68 hours a Seq-CIFAR-10 run.
`python -m experiments.conv_steps --seeds 1 5 --dtypes float32 bfloat16` prints a GPU's
steps per second, which turn these counts into hours.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cljax import train
from cljax.benchmarks import scenarios
from cljax.run import sharding
from experiments import rows as table_rows
from experiments.tuned import run_tuned

BUFFERS = (200, 500, 5120)
# Paper values, Table 2: per row, per buffer (None: no buffer), per setting.
PAPER = {
    "seq-mnist": {
        "joint": {None: {"class-il": 95.57, "task-il": 99.51}},
        "sgd": {None: {"class-il": 19.60, "task-il": 94.94}},
        "ewc_on": {None: {"class-il": 20.46, "task-il": 98.39}},
        "si": {None: {"class-il": 19.27, "task-il": 96.00}},
        "lwf": {None: {"class-il": 19.62, "task-il": 94.11}},
        "pnn": {None: {"task-il": 99.23}},
        "icarl": {200: (70.51, 98.28), 500: (70.10, 98.32), 5120: (70.60, 98.32)},
        "er": {200: (80.43, 97.86), 500: (86.12, 99.04), 5120: (93.40, 99.33)},
        "agem": {200: (45.72, 98.61), 500: (46.66, 98.93), 5120: (54.24, 98.93)},
        "gem": {200: (80.11, 97.78), 500: (85.99, 98.71), 5120: (95.11, 99.44)},
        "fdr": {200: (79.43, 97.66), 500: (85.87, 97.54), 5120: (87.47, 97.79)},
        "gss": {200: (38.90, 95.02), 500: (49.76, 97.71), 5120: (89.39, 98.33)},
        "mer": {200: (81.47, 98.05), 500: (88.35, 98.43), 5120: (94.57, 99.27)},
        "hal": {200: (84.70, 97.96), 500: (87.21, 98.03), 5120: (89.52, 98.35)},
        "der": {200: (84.55, 98.80), 500: (90.54, 98.84), 5120: (94.90, 99.29)},
        "derpp": {200: (85.61, 98.76), 500: (91.00, 98.94), 5120: (95.30, 99.47)},
    },
    "perm-mnist": {
        "joint": {None: 94.33},
        "sgd": {None: 40.70},
        "ewc_on": {None: 75.79},
        "si": {None: 65.86},
        "er": {200: 72.37, 500: 80.60, 5120: 89.90},
        "agem": {200: 66.42, 500: 67.56, 5120: 73.32},
        "gem": {200: 66.93, 500: 76.88, 5120: 87.42},
        "fdr": {200: 74.77, 500: 83.18, 5120: 90.87},
        "gss": {200: 63.72, 500: 76.00, 5120: 82.22},
        "hal": {200: 74.15, 500: 80.13, 5120: 89.20},
        "der": {200: 81.74, 500: 87.29, 5120: 91.66},
        "derpp": {200: 83.58, 500: 88.21, 5120: 92.26},
    },
    "rot-mnist": {
        "joint": {None: 95.76},
        "sgd": {None: 67.66},
        "ewc_on": {None: 77.35},
        "si": {None: 71.91},
        "er": {200: 85.01, 500: 88.91, 5120: 93.45},
        "agem": {200: 81.91, 500: 80.31, 5120: 80.18},
        "gem": {200: 80.80, 500: 81.15, 5120: 88.57},
        "fdr": {200: 85.22, 500: 89.67, 5120: 94.19},
        "gss": {200: 79.50, 500: 81.58, 5120: 85.24},
        "hal": {200: 84.02, 500: 85.00, 5120: 91.17},
        "der": {200: 90.04, 500: 92.24, 5120: 94.14},
        "derpp": {200: 90.43, 500: 92.77, 5120: 94.65},
    },
}
# The DER paper's MNIST-360 table (General Continual Learning: one stream, no tasks)
PAPER["mnist-360"] = {
    "joint": {None: 82.98},
    "sgd": {None: 19.09},
    "er": {200: 49.27, 500: 65.04, 1000: 75.18},
    "mer": {200: 48.58, 500: 62.21, 1000: 70.91},
    "agem_r": {200: 28.34, 500: 28.13, 1000: 29.21},
    "gss": {200: 43.92, 500: 54.45, 1000: 63.84},
    "der": {200: 55.22, 500: 69.11, 1000: 75.97},
    "derpp": {200: 54.16, 500: 69.62, 1000: 76.03},
}
# Table 2's Seq-CIFAR-10 and Seq-TinyImageNet columns (reduced ResNet-18; a GPU's work:
# `--benchmarks seq-cifar10 seq-tinyimg`). PNN's task-IL (95.13, 67.84) is left out: cljax's
# PNN builds MLP columns only. MER has no entry there; GEM, GSS and HAL none on TinyImg.
PAPER["seq-cifar10"] = {
    "joint": {None: {"class-il": 92.20, "task-il": 98.31}},
    "sgd": {None: {"class-il": 19.62, "task-il": 61.02}},
    "ewc_on": {None: {"class-il": 19.49, "task-il": 68.29}},
    "si": {None: {"class-il": 19.48, "task-il": 68.05}},
    "lwf": {None: {"class-il": 19.61, "task-il": 63.29}},
    "er": {200: (44.79, 91.19), 500: (57.74, 93.61), 5120: (82.47, 96.98)},
    "gem": {200: (25.54, 90.44), 500: (26.20, 92.16), 5120: (25.26, 95.55)},
    "agem": {200: (20.04, 83.88), 500: (22.67, 89.48), 5120: (21.99, 90.10)},
    "icarl": {200: (49.02, 88.99), 500: (47.55, 88.22), 5120: (55.07, 92.23)},
    "fdr": {200: (30.91, 91.01), 500: (28.71, 93.29), 5120: (19.70, 94.32)},
    "gss": {200: (39.07, 88.80), 500: (49.73, 91.02), 5120: (67.27, 94.19)},
    "hal": {200: (32.36, 82.51), 500: (41.79, 84.54), 5120: (59.12, 88.51)},
    "der": {200: (61.93, 91.40), 500: (70.51, 93.40), 5120: (83.81, 95.43)},
    "derpp": {200: (64.88, 91.92), 500: (72.70, 93.88), 5120: (85.24, 96.12)},
}
PAPER["seq-tinyimg"] = {
    "joint": {None: {"class-il": 59.99, "task-il": 82.04}},
    "sgd": {None: {"class-il": 7.92, "task-il": 18.31}},
    "ewc_on": {None: {"class-il": 7.58, "task-il": 19.20}},
    "si": {None: {"class-il": 6.58, "task-il": 36.32}},
    "lwf": {None: {"class-il": 8.46, "task-il": 15.85}},
    "er": {200: (8.49, 38.17), 500: (9.99, 48.64), 5120: (27.40, 67.29)},
    "agem": {200: (8.07, 22.77), 500: (8.06, 25.33), 5120: (7.96, 26.22)},
    "icarl": {200: (7.53, 28.19), 500: (9.38, 31.55), 5120: (14.08, 40.83)},
    "fdr": {200: (8.70, 40.36), 500: (10.54, 49.88), 5120: (28.97, 68.01)},
    "der": {200: (11.87, 40.22), 500: (17.75, 51.78), 5120: (36.73, 69.50)},
    "derpp": {200: (10.96, 40.87), 500: (19.38, 51.91), 5120: (39.02, 69.84)},
}
CONV = ("seq-cifar10", "seq-tinyimg")
BUFFERS_OF = {"mnist-360": (200, 500, 1000)}
TABLE2 = ("seq-mnist", "perm-mnist", "rot-mnist")
# Mammoth e75a491 on this kind of machine, Seq-MNIST buffer 500 (DESIGN.md).
MAMMOTH = {
    ("seq-mnist", "sgd", None): {"class-il": 19.53, "task-il": 97.29},
    ("seq-mnist", "joint", None): {"class-il": 95.46},
    ("seq-mnist", "er", 500): {"class-il": 83.98, "task-il": 98.80},
    ("seq-mnist", "der", 500): {"class-il": 89.00, "task-il": 98.79},
    ("seq-mnist", "derpp", 500): {"class-il": 91.04, "task-il": 98.96},
}
METHODS = (
    "sgd",
    "joint",
    "ewc_on",
    "si",
    "lwf",
    "pnn",
    "icarl",
    "er",
    "gem",
    "agem",
    "agem_r",
    "fdr",
    "gss",
    "hal",
    "mer",
    "der",
    "derpp",
)
# Rows that run a method with settings other than its tuned ones: name -> (method, overrides).
# Each is compared with its method's paper value.
VARIANTS = {
    # Mammoth's MNIST PNN never uses its adapters (see cljax/methods/pnn.py): the paper's row
    "pnn-no-laterals": ("pnn", {"laterals": False}),
    # Mammoth's iCaRL as the DER paper's code ran on MNIST: herding and class means on raw
    # features, exemplars replayed cast to uint8 (see cljax/methods/icarl.py)
    "icarl-mammoth": ("icarl", {"normalize": False, "replay_images": "uint8-truncated"}),
    # the true exemplars replayed (Mammoth since 2022), its raw features: which of the two
    # differences moves the row
    "icarl-unnormalized": ("icarl", {"normalize": False}),
    # SI's importance as Mammoth gathers it since 2024 (the path integral of the CE gradient),
    # beside the default, the formula of the code the DER paper ran (see cljax/methods/si.py)
    "si-path": ("si", {"omega": "path"}),
}
DOMAIN = ("perm-mnist", "rot-mnist")


def base_method(row: str) -> str:
    """The method a row runs (a variant's, or the row's own name)."""
    return VARIANTS[row][0] if row in VARIANTS else row


def paper_value(benchmark, method, buffer, setting):
    """The paper's number for one cell, or None."""
    entry = PAPER[benchmark].get(base_method(method), {}).get(buffer)
    if entry is None:
        return None
    if isinstance(entry, dict):
        return entry.get(setting)
    if isinstance(entry, tuple):
        return entry[0 if setting == "class-il" else 1]
    return entry


def run_row(benchmark, data_dir, row, buffer, seeds, seed_devices=1):
    """Runs one table row, all seeds in one vmapped program; returns the results dict
    without state. Perm-/Rot-MNIST seeds each see their own permutations or angles drawn
    from the seed, as Mammoth's (the angle draw alone moves Rot-MNIST by several points,
    so seeds sharing one draw would measure that draw); the driver applies them per seed
    (`Scenario.seed_maps`)."""
    method_name, overrides = VARIANTS.get(row, (row, {}))
    if seed_devices > 1:  # the seeds split over that many devices (sharding.SEEDS)
        overrides = {**overrides, "devices": seed_devices, "seed_devices": seed_devices}
    res = run_tuned(scenarios.build(benchmark, data_dir), method_name, buffer, seeds, **overrides)
    if benchmark in DOMAIN:
        res["transforms"] = "drawn per seed"
    return res


def paper_settings(benchmark, row) -> set:
    """The settings in which the paper reports row `row` on `benchmark`."""
    out = set()
    for entry in PAPER[benchmark].get(base_method(row), {}).values():
        plain = {"class-il", "task-il", "domain-il", "general"}
        out |= set(entry) if isinstance(entry, dict) else plain
    return out


def table(rows: dict) -> str:
    """Markdown table of every finished row beside the published numbers."""
    lines = [
        "| benchmark | setting | method | buffer | ours (mean +- std) | paper | Mammoth | diff vs paper | seeds | last batch | class-IL argmax | train s | total s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, res in rows.items():
        benchmark, method, buffer = key.split("|")
        buffer = None if buffer == "-" else int(buffer)
        for setting, stats in res["final_average_accuracy"].items():
            paper = paper_value(benchmark, method, buffer, setting)
            scored = paper_settings(benchmark, method)
            if paper is None and scored and setting not in scored:
                continue  # a setting the paper does not score this method in (PNN's class-IL)
            mammoth = MAMMOTH.get((benchmark, method, buffer), {}).get(setting)
            diff = f"{stats['mean'] - paper:+.2f}" if paper is not None else ""
            lines.append(
                f"| {benchmark} | {setting} | {method} | {buffer or '-'} | "
                f"{stats['mean']:.2f} +- {stats['std']:.2f} | {paper if paper is not None else ''} | "
                f"{mammoth if mammoth is not None else ''} | {diff} | {len(res['seeds'])} | "
                f"{res['hparams'].get('last_batch', 'fill')} | "
                f"{res.get('class_il', 'seen') if setting == 'class-il' else ''} | "
                f"{res['timing']['train_s']:.1f} | {res['timing']['total_s']:.1f} |"
            )
    return "\n".join(lines)


def header(args, rows: dict, seconds: float) -> str:
    """The markdown table's title, command, machine, times (`seconds`: this invocation's)
    and protocol."""
    gcl = args.benchmarks == ["mnist-360"]
    title = "MNIST-360 (General Continual Learning)" if gcl else "Table 2, MNIST rows"
    command = "python -m experiments.reproduce_der --data-dir DATA --seeds " + str(args.seeds)
    return (
        f"# DER paper, {title}: cljax vs the paper\n\n"
        f"Command: `{command}{' --benchmarks mnist-360' if gcl else ''}`\n\n"
        f"{table_rows.machine(os_name=True)}. This invocation: {seconds:.0f} s; per-row times below "
        "(total includes compile and evaluation); all the rows together: "
        f"{sum(r['timing']['total_s'] for r in rows.values()):.0f} s, the wall time of "
        "running the table from one command on this machine (rows run beside other jobs "
        "make it an upper bound).\n\n"
        + (
            "Accuracy (percent) on MNIST-360's rotated test set at the end of the stream "
            "(setting `general`), mean +- std over seeds; each seed draws its own stream. "
            "Paper: Buzzega et al. 2020, MNIST-360 table. The MLP 784-100-100-10 of the paper.\n\n"
            if gcl
            else "Final average accuracy (percent) after the last task, mean +- std over seeds. "
            "Paper: Buzzega et al. 2020, Table 2. Mammoth: its current code on this kind of "
            "machine (DESIGN.md). Last batch: how each epoch's last, partial batch was "
            "taken: `short` (only the items left, as Mammoth's PyTorch loader: the run "
            "setting `last_batch`, the default since session 27) or `fill` (topped up with "
            "the epoch's first items, the rows run before it; at batch 128 the short "
            "step, mostly replayed items, moves final accuracy by about 4 points: "
            "docs/results.md). Class-IL argmax: over every output (`all`, Mammoth's protocol, "
            "the default since session 33) or over the classes seen so far (`seen`, the rows "
            "run before): the final accuracy is the same, the rows of the accuracy matrix "
            "before the last task (forgetting, the forgetting plot) are not.\n\n"
        )
    )


def parser() -> argparse.ArgumentParser:
    """The command line (`main`'s options)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument(
        "--benchmarks",
        nargs="+",
        default=list(TABLE2),
        help="Table 2's seq-mnist perm-mnist rot-mnist (default), its ResNet-18 columns "
        "seq-cifar10 seq-tinyimg (a GPU's work), or mnist-360 (its own table)",
    )
    p.add_argument(
        "--rows",
        "--methods",
        nargs="+",
        default=list(METHODS),
        help=f"rows to run: methods ({' '.join(METHODS)}) or variants ({' '.join(VARIANTS)})",
    )
    p.add_argument(
        "--buffers", nargs="+", type=int, default=None, help="default: the paper's per benchmark"
    )
    p.add_argument("--out", default=None, help="default: experiments/results/der_table2_mnist")
    p.add_argument(
        "--rerun",
        action="store_true",
        help="run the chosen rows again for every seed, replacing what the table has "
        "(after a change of protocol); otherwise a row runs only the seeds it lacks",
    )
    p.add_argument(
        "--stale",
        action="store_true",
        help="rerun, of the chosen rows, those run with the old top-up of an epoch's last "
        "batch (their 'last batch' column says fill)",
    )
    p.add_argument(
        "--seed-devices",
        type=int,
        default=1,
        help="split each row's seeds over this many devices (on a CPU: XLA host devices, one "
        "a core); seeds grouped differently round differently in the last bits",
    )
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    sharding.host_devices(args.seed_devices)  # before anything starts JAX's backend
    gcl = args.benchmarks == ["mnist-360"]
    if args.out is None:
        conv = set(args.benchmarks) <= set(CONV)
        args.out = "experiments/results/der_" + (
            "mnist360" if gcl else "table2_resnet18" if conv else "table2_mnist"
        )
    for benchmark in args.benchmarks:
        if benchmark not in PAPER:
            p.error(f"unknown benchmark {benchmark!r}; choose from {', '.join(PAPER)}")
    train.log_tasks()

    out_json, out_md = Path(args.out + ".json"), Path(args.out + ".md")
    rows = table_rows.load(out_json)
    seeds = tuple(range(args.seeds))
    mine = {}  # the rows this invocation ran
    started = time.perf_counter()
    for benchmark in args.benchmarks:
        for method in args.rows:
            if method not in (*METHODS, *VARIANTS):
                p.error(f"unknown row {method!r}; choose from {', '.join((*METHODS, *VARIANTS))}")
            if base_method(method) not in PAPER[benchmark]:  # not a row of the paper ("-")
                continue
            paper_row = PAPER[benchmark][base_method(method)]
            buffers = args.buffers or BUFFERS_OF.get(benchmark, BUFFERS)
            buffers = [None] if None in paper_row else buffers
            for buffer in buffers:
                key = f"{benchmark}|{method}|{buffer or '-'}"
                done = None if args.rerun else rows.get(key)
                if args.stale and done and done["hparams"].get("last_batch", "fill") == "fill":
                    done = None

                def run(todo, benchmark=benchmark, method=method, buffer=buffer):
                    return run_row(
                        benchmark, args.data_dir, method, buffer, todo, args.seed_devices
                    )

                # other settings since the row ran: merging fails and the row is rerun whole
                res = table_rows.complete(key, done, seeds, run, rerun_whole=True)
                if res is None:
                    continue
                mine[key] = res
                rows = table_rows.save(out_json, mine)  # keeps rows another invocation wrote
                summary = {s: round(v["mean"], 2) for s, v in res["final_average_accuracy"].items()}
                print(f"{key}: {summary} ({res['timing']['total_s']:.0f}s)", flush=True)
    text = header(args, rows, time.perf_counter() - started) + table(rows) + "\n"
    table_rows.write_table(out_md, text, out_json)  # and its plots beside it
    print(f"wrote {out_md}")


if __name__ == "__main__":
    main()
