"""Split MNIST as van de Ven et al. run it, cljax beside the authors' own code on the same data.

The reference is GMvandeVen/continual-learning (e6d795a), whose `compare.py` compares methods on
Split MNIST in each scenario ("Three types of incremental learning", Nature Machine Intelligence
2022; BI-R, Nature Communications 2020). This script runs, for each method and seed:

- cljax: `cljax --method M --benchmark split-mnist --seeds 1 --seed-offset S --set class_seed=S`
  (the method's tuned split-mnist row: that code's protocol; `class_seed` S gives seed S's class
  order as that code draws it, so both see the same tasks);
- the reference (with `--reference-code DIR`, a checkout of that repository, run with the
  current Python, which needs torch and torchvision): `main.py --experiment=splitMNIST
  --scenario=class --seed=S` plus the options `compare.py` gives the method, MNIST read from
  `DIR/store/datasets/MNIST` (torchvision's layout: gunzip the IDX files into its `raw/`).
  `--reference-logs DIR` reads runs already made instead (`<name>_class_s<S>.log` files of
  main.py's output, beside `<name>_class_s<S>.time` of `/usr/bin/time -v`).

Both report the class-IL accuracy after the last task averaged over the five tasks' test sets
(the reference's "average accuracy over all 5 contexts"; cljax's final average accuracy), with
every output in the argmax. Results: experiments/results/vdv_split_mnist.{json,md}.

    python -m experiments.reproduce_vdv --data-dir ../shared/data --seeds 1 2 3 4 5 \\
        --methods bir gen_classifier dgr_vae --reference-logs /path/to/logs

Wall times are comparable only where each run had the machine to itself (the table says how the
runs were made: pass `--note`).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from experiments import rows

RESULTS = Path(__file__).with_name("results")
TABLE_JSON = RESULTS / "vdv_split_mnist.json"
TABLE_MD = RESULTS / "vdv_split_mnist.md"

# cljax method -> (the reference's name for its logs, main.py's options as compare.py sets them
# for splitMNIST)
REFERENCE = {
    "sgd": ("none", ""),
    "joint": ("joint", "--joint --iters=10000"),
    "bir": ("bir", "--brain-inspired"),
    "gen_classifier": (
        "genclass",
        "--gen-classifier --iters=1000 --fc-units=85 --fc-layers=3 --z-dim=5 --hidden --lr=0.001",
    ),
    "dgr_vae": ("dgr", "--replay=generative"),
    "ewc": ("ewc", "--ewc"),
    "si": ("si", "--si"),
    "lwf": ("lwf", "--lwf"),
    "er": ("er", "--replay=buffer"),
    "agem": ("agem", "--agem"),
    # compare.py's iCaRL also sets the active classes to those seen so far
    "icarl": ("icarl", "--icarl --active-classes=all-so-far"),
}
# the rehearsal methods' memory: that code's budget of 100 a class over ten classes
BUFFER = {"er": 1000, "agem": 1000, "icarl": 1000}
LABELS = {
    "sgd": "None (Adam)",
    "joint": "Joint",
    "bir": "BI-R",
    "gen_classifier": "Generative classifier",
    "dgr_vae": "DGR (VAE)",
    "ewc": "EWC",
    "si": "SI",
    "lwf": "LwF",
    "er": "ER (100 a class)",
    "agem": "A-GEM (100 a class)",
    "icarl": "iCaRL (100 a class)",
}
ACCURACY = re.compile(r"average accuracy over all \d+ contexts: ([0-9.]+)")
WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)")


def parse_wall(text: str) -> float | None:
    """Seconds of `/usr/bin/time -v`'s wall clock line, or None."""
    m = WALL.search(text)
    if not m:
        return None
    parts = [float(p) for p in m.group(1).split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


# the scenario -> cljax's benchmark
BENCHMARK = {"class": "split-mnist", "task": "split-mnist-task", "domain": "split-mnist-domain"}
SETTING = {"class": "class-il", "task": "task-il", "domain": "domain-il"}
CLASS_ONLY = ("gen_classifier", "icarl")


def reference_from_logs(folder: Path, method: str, scenario: str, seed: int) -> dict | None:
    """`{"accuracy", "wall_s"}` of a reference run's log (accuracy in %), or None if unfinished."""
    name = REFERENCE[method][0]
    log = folder / f"{name}_{scenario}_s{seed}.log"
    if not log.is_file():
        return None
    m = ACCURACY.search(log.read_text())
    if not m:
        return None
    timing = folder / f"{name}_{scenario}_s{seed}.time"
    wall = parse_wall(timing.read_text(errors="replace")) if timing.is_file() else None
    return {"accuracy": 100.0 * float(m.group(1)), "wall_s": wall}


def run_reference(code: Path, out: Path, method: str, scenario: str, seed: int) -> dict:
    """Runs the reference's main.py for `method` in `scenario` with seed `seed` (logs under
    `out`)."""
    name, options = REFERENCE[method]
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "main.py", "--experiment=splitMNIST", f"--scenario={scenario}"]
    cmd += [f"--seed={seed}", *options.split()]
    start = time.perf_counter()
    with open(out / f"{name}_{scenario}_s{seed}.log", "w") as log:
        subprocess.run(cmd, cwd=code, stdout=log, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    result = reference_from_logs(out, method, scenario, seed) or {}
    return {**result, "wall_s": wall}


def cljax_finished(workdir: Path, method: str, scenario: str, seed: int) -> dict | None:
    """`{"accuracy", "wall_s"}` of a finished cljax run under `workdir`, or None."""
    done = workdir / f"{method}-{scenario}-s{seed}" / "results.json"
    if not done.is_file():
        return None
    res = json.loads(done.read_text())
    if not res.get("finished"):
        return None
    final = res["final_average_accuracy"]
    return {"accuracy": final[SETTING[scenario]]["mean"], "wall_s": res["timing"]["wall_s"]}


def run_cljax(data_dir: str, workdir: Path, method: str, scenario: str, seed: int) -> dict:
    """cljax's run of `method` in `scenario` for seed `seed` (reused when finished)."""
    folder = workdir / f"{method}-{scenario}-s{seed}"
    found = cljax_finished(workdir, method, scenario, seed)
    if found is None:
        cmd = [sys.executable, "-m", "cljax.cli", "--method", method, "--benchmark"]
        cmd += [BENCHMARK[scenario], "--seeds", "1", "--seed-offset", str(seed), "--set"]
        cmd += [f"class_seed={seed}", "--data-dir", data_dir, "--workdir", str(folder)]
        if method in BUFFER:
            cmd += ["--buffer-size", str(BUFFER[method])]
        cmd += ["--no-progress", "--resume" if (folder / "checkpoints").exists() else "--overwrite"]
        subprocess.run(cmd, check=True)
        found = cljax_finished(workdir, method, scenario, seed)
    return found


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(results: dict, note: str) -> str:
    """The markdown tables of `results` (`{scenario: {method: {seed: {"cljax", "reference"}}}}`)."""
    lines = [
        "# Split MNIST: cljax beside van de Ven et al.'s code",
        "",
        "Final accuracy (%) after the last task, averaged over the five tasks' test sets, the "
        "argmax over every output (class-IL: ten; domain-IL: two) or, in task-IL, over the "
        "item's task's two; mean +- std over seeds, "
        "each seed's class order as the reference draws it (`class_seed`). Reference: "
        "GMvandeVen/continual-learning e6d795a `main.py` with `compare.py`'s options, CPU torch. "
        "cljax: `python -m experiments.reproduce_vdv` (the methods' split-mnist rows). Wall "
        "seconds per seed, median.",
        "",
        f"Runs: {note}" if note else "",
    ]
    head, lines = lines, []
    cells = []  # (scenario, method, difference) of every cell with both sides
    for scenario in sorted(results, key=list(BENCHMARK).index):
        per_method = results[scenario]
        lines += [
            "",
            f"## {scenario}-incremental",
            "",
            "| method | reference | cljax | cljax - reference | seeds | per seed (ref / cljax) "
            "| wall s ref / cljax |",
            "|---|---|---|---|---|---|---|",
        ]
        for method in sorted(per_method, key=lambda m: list(REFERENCE).index(m)):
            per_seed = per_method[method]
            seeds = sorted(per_seed, key=int)
            both = [s for s in seeds if per_seed[s].get("reference") and per_seed[s].get("cljax")]
            ref = [per_seed[s]["reference"]["accuracy"] for s in both]
            ours = [per_seed[s]["cljax"]["accuracy"] for s in both]
            (rm, rs), (om, os_) = summary(ref), summary(ours)
            if rm is None:
                continue
            walls_r = [w for s in both if (w := per_seed[s]["reference"].get("wall_s"))]
            walls_c = [w for s in both if (w := per_seed[s]["cljax"].get("wall_s"))]
            wr = statistics.median(walls_r) if walls_r else float("nan")
            wc = statistics.median(walls_c) if walls_c else float("nan")
            pairs = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(ref, ours, strict=True))
            cells.append((scenario, LABELS.get(method, method), om - rm))
            lines.append(
                f"| {LABELS.get(method, method)} | {rm:.2f} +- {rs:.2f} | {om:.2f} +- {os_:.2f} "
                f"| {om - rm:+.2f} | {len(both)} | {pairs} | {wr:.0f} / {wc:.0f} |"
            )
    near = [c for c in cells if abs(c[2]) <= 2.0]
    far = ", ".join(f"{m} {s}-IL ({d:+.2f})" for s, m, d in cells if abs(d) > 2.0)
    count = f"Cells within 2 points of the reference: {len(near)} of {len(cells)}" + (
        f"; further: {far}." if far else "."
    )
    return "\n".join([*head, "", count, *lines]) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder holding mnist/ (IDX .gz files)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--methods", nargs="+", default=list(REFERENCE), choices=list(REFERENCE))
    p.add_argument("--scenarios", nargs="+", default=["class"], choices=list(BENCHMARK))
    p.add_argument("--workdir", default="runs/vdv", help="where cljax's runs go")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--reference-code", help="a checkout of GMvandeVen/continual-learning to run")
    ref.add_argument("--reference-logs", help="a folder of that code's finished runs' logs")
    p.add_argument(
        "--skip-cljax",
        action="store_true",
        help="run no cljax run: read the reference and cljax's finished runs under --workdir",
    )
    p.add_argument("--note", default="", help="how the runs were made (the table prints it)")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    results = rows.load(TABLE_JSON)
    for scenario in args.scenarios:
        for method in args.methods:
            if scenario != "class" and method in CLASS_ONLY:
                continue
            per_seed = results.setdefault(scenario, {}).setdefault(method, {})
            for seed in args.seeds:
                entry = per_seed.setdefault(str(seed), {})
                if args.reference_logs:
                    found = reference_from_logs(Path(args.reference_logs), method, scenario, seed)
                    if found:
                        entry["reference"] = found
                elif args.reference_code:
                    entry["reference"] = run_reference(
                        Path(args.reference_code), workdir / "reference", method, scenario, seed
                    )
                if args.skip_cljax:
                    found = cljax_finished(workdir, method, scenario, seed)
                    if found:
                        entry["cljax"] = found
                else:
                    entry["cljax"] = run_cljax(args.data_dir, workdir, method, scenario, seed)
                print(scenario, method, seed, json.dumps(entry), flush=True)
                RESULTS.mkdir(exist_ok=True)  # saved as it goes: a long run can be stopped
                TABLE_JSON.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    TABLE_MD.write_text(table(results, args.note))
    print(TABLE_MD.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
