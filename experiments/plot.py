"""Plots that compare runs, drawn from their results files.

    python -m experiments.plot RUN_DIR [RUN_DIR ...] [--out DIR]
    python -m experiments.plot experiments/results/der_mnist360.json --out experiments/results/der_mnist360

Each argument is a run folder (its `results.json`), a results file, or a
reproduction table's JSON (`experiments/results/*.json`: one results object a
row). Written, as PNG and SVG, into `--out` (default: the current folder):

- `compare`: final average accuracy of every run, mean with a bar of one std
  over seeds, one panel per (benchmark, setting), runs labelled method and
  buffer (a row's key for a table);
- `forgetting`: each task's accuracy across the sequence (after task i, on task
  j <= i, mean over seeds), a panel per run (the first setting; up to 12 runs);
- `over_time`: a stream's accuracy over its steps (runs with
  `accuracy_over_time`, from `--eval-every`), mean and one std over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from cljax.outputs import plots
from cljax.outputs import results as results_lib
from cljax.run import workdir

FORMATS = ("png", "svg")


def collect(paths) -> list[tuple[str, results_lib.Results]]:
    """`(label, results)` of every run the arguments name (ResultsError for a bad one)."""
    runs = []
    for arg in paths:
        path = Path(arg)
        file = path / "results.json" if path.is_dir() else path
        try:
            obj = json.loads(file.read_text())
        except FileNotFoundError:
            raise results_lib.ResultsError(f"no results file at {file}") from None
        except (OSError, ValueError) as e:
            raise results_lib.ResultsError(f"cannot read {file} as JSON: {e}") from e
        if isinstance(obj, dict) and "method" not in obj:  # a table: one results object a row
            for key, row in obj.items():
                runs.append((key.replace("|", " "), results_lib.parse(row, f"{file}: {key}")))
        else:
            res = results_lib.parse(obj, str(file))
            buffer = f" {res.buffer_size}" if res.buffer_size else ""
            runs.append((f"{res.method}{buffer}", res))
    return runs


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with workdir.replaced(path) as tmp:
            fig.savefig(tmp, dpi=110, format=fmt)
        written.append(path)
    return written


def _finish(plt, fig, unused_axes, stem: Path) -> list[Path]:
    """Blanks the panels left over, writes the figure (PNG and SVG) and closes it."""
    for ax in unused_axes:
        ax.axis("off")
    fig.tight_layout()
    written = _save(fig, stem)
    plt.close(fig)
    return written


def compare(runs, stem: Path) -> list[Path]:
    """Final average accuracy (mean, one std) of every finished run, a panel per
    (benchmark, setting)."""
    plt = plots.import_pyplot()
    panels: dict[tuple[str, str], list] = {}
    for label, res in runs:
        for setting, stat in res.final_average_accuracy.items():
            panels.setdefault((res.benchmark, setting), []).append((label, stat))
    if not panels:
        return []
    most = max(len(v) for v in panels.values())
    cols = min(3 if most <= 12 else 1, len(panels))  # long panels one under another
    rows = math.ceil(len(panels) / cols)
    width = max(4.5, 0.3 * most + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 4.2 * rows), squeeze=False)
    for ax, ((benchmark, setting), bars) in zip(axes.flat, sorted(panels.items()), strict=False):
        x = np.arange(len(bars))
        ax.bar(
            x,
            [s.mean for _, s in bars],
            yerr=[s.std for _, s in bars],
            capsize=3,
            color="tab:blue",
            alpha=0.8,
        )
        ax.set_xticks(x, [label for label, _ in bars], rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("final average accuracy (%)")
        ax.set_title(f"{benchmark}, {setting}")
        ax.grid(axis="y", alpha=0.3)
    return _finish(plt, fig, list(axes.flat)[len(panels) :], stem)


def forgetting(runs, stem: Path, limit: int = 12) -> list[Path]:
    """Each task's accuracy after every task from its own on (mean over seeds), per run."""
    plt = plots.import_pyplot()
    chosen = [(label, res) for label, res in runs if res.tasks_done > 1][:limit]
    if not chosen:
        return []
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.4 * rows), squeeze=False)
    for ax, (label, res) in zip(axes.flat, chosen, strict=False):
        setting = res.settings[0]
        with warnings.catch_warnings():  # NaN above the diagonal: tasks not yet seen
            warnings.simplefilter("ignore", RuntimeWarning)
            acc = np.nanmean(res.accuracy(setting), axis=0)  # [after task i, on task j]
        T = acc.shape[0]
        for j in range(T):
            after = np.arange(j, T)
            ax.plot(after + 1, acc[j:, j], marker="o", ms=3, label=f"task {j + 1}")
        ax.set_ylim(0, 100)
        if T <= 10:  # a tick a task; matplotlib's own ticks for longer sequences
            ax.set_xticks(range(1, T + 1))
        ax.set_xlabel("after training task")
        ax.set_ylabel(f"{setting} accuracy (%)")
        ax.set_title(label, fontsize=9)
        if T <= 10:
            ax.legend(fontsize=6, ncol=2)
    return _finish(plt, fig, list(axes.flat)[len(chosen) :], stem)


def over_time(runs, stem: Path) -> list[Path]:
    """A stream's accuracy over its steps, mean and one std over seeds, one line a run."""
    plt = plots.import_pyplot()
    curves = [(label, res.raw.get("accuracy_over_time")) for label, res in runs]
    curves = [(label, c) for label, c in curves if c and c.get("steps")]
    if not curves:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, c in curves:
        acc = np.array(c["accuracy"], dtype=float)  # [point][seed]
        mean, std = acc.mean(1), acc.std(1)
        ax.plot(c["steps"], mean, label=label)
        ax.fill_between(c["steps"], mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written = _save(fig, stem)
    plt.close(fig)
    return written


def plot_all(runs, out: Path, prefix: str = "") -> list[Path]:
    """Every plot of `runs` into folder `out`, files named `PREFIXcompare.png` and so on."""
    out = Path(out)
    written = compare(runs, out / f"{prefix}compare")
    written += forgetting(runs, out / f"{prefix}forgetting")
    written += over_time(runs, out / f"{prefix}over_time")
    return written


def for_table(table_json) -> list[Path]:
    """The plots of a reproduction table, beside it (`STEM_compare.png`, ...): what the
    reproduction scripts call after writing their tables."""
    table_json = Path(table_json)
    try:
        runs = collect([str(table_json)])
    except results_lib.ResultsError as e:
        print(f"warning: no plots for {table_json}: {e}", file=sys.stderr)
        return []
    return plot_all(runs, table_json.parent, prefix=f"{table_json.stem}_")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run folders, results files or table JSON files")
    p.add_argument("--out", default=".", help="folder for the plots (default: here)")
    p.add_argument("--prefix", default="", help="put before each file name")
    args = p.parse_args(argv)
    try:
        runs = collect(args.runs)
    except results_lib.ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    written = plot_all(runs, Path(args.out), args.prefix)
    if not written:
        print("error: nothing to plot (no finished run among them)", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
