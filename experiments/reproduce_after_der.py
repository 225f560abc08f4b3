"""The methods after DER on Seq-MNIST: cljax beside its authors' code run here, and beside
the published numbers where a paper has them.

    python -m experiments.reproduce_after_der --data-dir ../shared/data --seeds 10

Runs each method of `ROWS` with its tuned settings (`cljax/tuned/<method>.py`) on
Seq-MNIST (class-IL and task-IL, the MLP 784-100-100-10) at the buffers listed, every seed
of a row in one vmapped program, and writes `experiments/results/after_der_mnist.md`
(and `.json`, and its plots): mean +- std over seeds beside

- `reference`: the authors' own code run on this machine on the same MNIST files (3
  seeds; `REFERENCE` holds the means and `REFERENCE_RUNS` the commands and commit), and
  the difference to it (the criterion: within 2 points, or explained);
- `paper`: the method's own published Seq-MNIST number, where it has one (CLS-ER's
  README), and the difference to it.

Rows already in the JSON file keep their seeds and run only the missing ones, so an
interrupted run continues where it stopped (`--rerun` runs them again whole). The DER
paper's own table is `experiments/reproduce_der.py`; this one sits beside it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cljax import train
from cljax.benchmarks import scenarios
from experiments import rows as table_rows
from experiments.tuned import run_tuned

BENCHMARK = "seq-mnist"
# The rows and their buffers: methods, and variants (name -> (method, overrides)) that run a
# method as the reference's code does where the default follows the paper.
ROWS = {
    "cls_er": (200, 500, 5120),
    "er_ace": (200, 500),
    "gdumb": (200, 500),
    "gdumb-mammoth": (200, 500),
    "rpc": (200, 500),
    "rpc-mammoth": (200, 500),
    "lucir": (200, 500),
    "lucir-mammoth": (200, 500),
    "bic": (200, 500),
    "xder": (200, 500),
    "xder_ce": (200, 500),
    "xder_rpc": (200, 500),
}
VARIANTS = {
    # Mammoth's GDumb: a reservoir, one fit after the last task (cljax/methods/gdumb.py)
    "gdumb-mammoth": ("gdumb", {"sampler": "reservoir", "fit_at": "last"}),
    # Mammoth's RPC trains the raw outputs, the polytope only predicts (cljax/methods/rpc.py)
    "rpc-mammoth": ("rpc", {"train_through_polytope": False}),
    # Mammoth's less-forget weight lags a task: lamda_base * sqrt(t - 1) (cljax/methods/lucir.py)
    "lucir-mammoth": ("lucir", {"lamda_schedule": "mammoth"}),
}
# Published Seq-MNIST numbers (class-IL, task-IL) per row and buffer, with their source.
PAPER = {
    "cls_er": {200: (89.54, 97.97), 500: (92.05, 98.95), 5120: (95.73, 99.40)},
}
PAPER_SOURCE = {"cls_er": "the CLS-ER README (NeurAI-Lab/CLS-ER 73f3e63)"}
# The authors' code run here, seeds 0-2 (session 34): per (row, buffer) the mean
# (class-IL, task-IL), and how it ran.
REFERENCE = {
    ("cls_er", 200): (88.76, 97.75),
    ("cls_er", 500): (91.61, 98.82),
    ("er_ace", 200): (86.14, 98.91),
    ("er_ace", 500): (89.97, 99.01),
    ("gdumb-mammoth", 200): (78.33, 94.97),
    ("gdumb-mammoth", 500): (86.36, 97.09),
    ("rpc-mammoth", 200): (78.63, 93.56),
    ("rpc-mammoth", 500): (83.35, 93.55),
    ("lucir-mammoth", 200): (67.97, 98.76),
    ("lucir-mammoth", 500): (82.82, 98.91),
    ("bic", 200): (80.84, 99.23),
    ("bic", 500): (88.16, 99.29),
    ("xder", 200): (78.26, 99.46),  # seeds 1-2: seed 0 collapses at its first step (NOTES)
    ("xder", 500): (79.82, 99.44),
    ("xder_ce", 200): (80.50, 99.43),
    ("xder_ce", 500): (82.71, 99.54),
    ("xder_rpc", 200): (77.12, 99.43),
    ("xder_rpc", 500): (79.89, 99.52),
}
MAMMOTH = (
    "Mammoth e75a491, seeds 0-2 (`python main.py --model M --dataset seq-mnist --buffer_size B "
    "--seed S --num_workers 0 --non_verbose 1"
)
ER_FLAGS = " --lr 0.1 --batch_size 10 --minibatch_size 10 --n_epochs 1`)"
REFERENCE_RUNS = {
    "cls_er": "NeurAI-Lab/CLS-ER 73f3e63, unmodified, seeds 0-2 (`python main.py --dataset "
    "seq-mnist --model clser --buffer_size B --load_best_args --seed S`), its stable model",
    "er_ace": MAMMOTH + ER_FLAGS,
    "gdumb-mammoth": MAMMOTH + "`: its defaults, batch 64, 256 fitting epochs)",
    "rpc-mammoth": MAMMOTH + ER_FLAGS + " with f38f941's memory quota put back to "
    "`buffer_size // ((t + 1) * cpt)` (one line; unpatched, the second task's classes never "
    "enter the memory and class-IL is 65.78 / 67.35)",
    "lucir-mammoth": MAMMOTH + ER_FLAGS + " with its fine-tuning's `torch.cuda.synchronize()` "
    "skipped on a CPU (no numeric effect)",
    "bic": MAMMOTH + ER_FLAGS,
    "xder_ce": MAMMOTH + ER_FLAGS[:-2] + " --alpha 0.3 --beta 0.8`)",
    "xder_rpc": MAMMOTH + ER_FLAGS[:-2] + " --alpha 0.3 --beta 0.8`)",
    "xder": MAMMOTH + ER_FLAGS[:-2] + " --alpha 0.3 --beta 0.8`) with two patches for "
    "one-channel inputs without normalisation (mean 0 and std 1 for its strong augmentation, "
    "grayscale the identity on one channel); the mean of seeds 1 and 2",
}
# What is known of the cells more than 2 points from the reference.
NOTES = [
    "`rpc-mammoth`, 2-3.5 points under Mammoth: the gap is the last task's. Mammoth trains "
    "the raw outputs and drops the last one when predicting through the polytope, so class 9 "
    "scores only `-S/3` (S the sum of the other nine outputs) and wins or not by the sign "
    "and size of S: that task's task-IL is 49-78 over our 10 seeds (mostly ~50: class 9 never "
    "wins), 52-87 over Mammoth's 3 (buffer 200) and 66-77 (500); tasks 1-4 agree within a "
    "point. What sets S in the two codes is not found. The paper's form (`rpc`, trained "
    "through the polytope) has no such cliff: 98.86 / 99.13 task-IL.",
    "`lucir-mammoth` at 200, 2.1 over Mammoth's class-IL: our seeds 0-2 alone give 68.10 "
    "against its 67.97; over 10 seeds ours spread 67.1-74.1 (std 2.43), so the mean of 3 "
    "reference seeds is uncertain by about 1.4 (one standard error at that spread).",
    "`gdumb` and `lucir` (the papers' sampler and lambda) have no reference run: Mammoth runs "
    "the `-mammoth` rows' settings.",
    "`xder`: the reference is the mean of Mammoth's seeds 1 and 2. Its seed 0 collapses at the "
    "first step at both buffers (10.11 / 10.35 class-IL): one of that step's strong views is an "
    "all-black crop, the MLP's zero biases give it all-zero outputs, and the L2 normalisation "
    "of its heads (`x / max(|x|, 1e-12)`) multiplies SupCon's gradient by 1e12. cljax "
    "normalises the same way; none of its 10 seeds collapsed (77.2-80.2 class-IL at buffer "
    "200).",
    "The X-DER rows' times were taken while other jobs shared the two cores: upper bounds. "
    "`xder` costs about 40x `xder_ce` a step here (its strong views and SupCon over 4 views "
    "of up to 74 images a step); Mammoth's took about 10x.",
    "`xder`, `xder_ce`, `xder_rpc` run Mammoth HEAD's settings (the tuned Seq-MNIST rows: "
    "HEAD's defaults, alpha 0.3 and beta 0.8, which HEAD requires and does not tune for MNIST); "
    "`xder`'s own defaults are the paper's code's (tpami2023).",
]
SETTINGS = ("class-il", "task-il")


def cell(pair, setting):
    """The `setting` value of a (class-IL, task-IL) pair, or None."""
    return None if pair is None else pair[SETTINGS.index(setting)]


def table(rows: dict) -> str:
    """Markdown table of every finished row beside the reference code and the paper."""
    lines = [
        "| method | buffer | setting | ours (mean +- std) | reference | ours - reference "
        "| paper | ours - paper | seeds | train s | total s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, res in rows.items():
        _, row, buffer = key.split("|")
        buffer = int(buffer)
        for setting in SETTINGS:
            stats = res["final_average_accuracy"][setting]
            ref = cell(REFERENCE.get((row, buffer)), setting)
            paper = cell(PAPER.get(row, {}).get(buffer), setting)
            lines.append(
                f"| {row} | {buffer} | {setting} | {stats['mean']:.2f} +- {stats['std']:.2f} | "
                + " | ".join(
                    "" if v is None else f"{v:.2f}"
                    for v in (
                        ref,
                        None if ref is None else stats["mean"] - ref,
                        paper,
                        None if paper is None else stats["mean"] - paper,
                    )
                )
                + f" | {len(res['seeds'])} | {res['timing']['train_s']:.1f} "
                f"| {res['timing']['total_s']:.1f} |"
            )
    return "\n".join(lines)


def header(args, rows: dict, seconds: float) -> str:
    """The markdown's title, command, machine, protocol and sources."""
    sources = "".join(f"- `{r}` paper: {s}\n" for r, s in PAPER_SOURCE.items())
    sources += "".join(f"- `{r}` reference: {s}\n" for r, s in REFERENCE_RUNS.items())
    return (
        "# The methods after DER on Seq-MNIST: cljax, the authors' code, the papers\n\n"
        f"Command: `python -m experiments.reproduce_after_der --data-dir DATA --seeds "
        f"{args.seeds}`\n\n"
        f"{table_rows.machine(os_name=True)}. This invocation: {seconds:.0f} s; all rows: "
        f"{sum(r['timing']['total_s'] for r in rows.values()):.0f} s.\n\n"
        "Final average accuracy (percent) after the last of 5 tasks, mean +- std over seeds; "
        "class-IL is the argmax over every output (the reference protocol), task-IL over the "
        "task's own two. The MLP 784-100-100-10, each row's tuned settings "
        "(`cljax/tuned/`). Reference: the authors' code on this machine on the same MNIST "
        "files, mean of its seeds.\n\n" + sources + "\n"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--rows", nargs="+", default=list(ROWS), help=f"of {' '.join(ROWS)}")
    p.add_argument("--buffers", nargs="+", type=int, default=None, help="default: each row's")
    p.add_argument("--out", default="experiments/results/after_der_mnist")
    p.add_argument("--rerun", action="store_true", help="run the chosen rows again whole")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    for row in args.rows:
        if row not in ROWS:
            p.error(f"unknown row {row!r}; choose from {', '.join(ROWS)}")
    train.log_tasks()
    out_json, out_md = Path(args.out + ".json"), Path(args.out + ".md")
    rows = table_rows.load(out_json)
    seeds = tuple(range(args.seeds))
    started = time.perf_counter()
    scenario = scenarios.build(BENCHMARK, args.data_dir)
    for row in args.rows:
        for buffer in args.buffers or ROWS[row]:
            key = f"{BENCHMARK}|{row}|{buffer}"

            def run(todo, row=row, buffer=buffer):
                method, overrides = VARIANTS.get(row, (row, {}))
                return run_tuned(scenario, method, buffer, todo, **overrides)

            done = None if args.rerun else rows.get(key)
            res = table_rows.complete(key, done, seeds, run, rerun_whole=True)
            if res is None:
                continue
            rows = table_rows.save(out_json, {key: res})
            summary = {s: round(v["mean"], 2) for s, v in res["final_average_accuracy"].items()}
            print(f"{key}: {summary} ({res['timing']['total_s']:.0f}s)", flush=True)
    notes = "\n\nNotes:\n\n" + "".join(f"- {n}\n" for n in NOTES)
    text = header(args, rows, time.perf_counter() - started) + table(rows) + notes
    table_rows.write_table(out_md, text, out_json)
    print(f"wrote {out_md}")


if __name__ == "__main__":
    main()
