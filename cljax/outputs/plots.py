"""Pictures of a run: the accuracy matrix per evaluation setting (mean over seeds)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from cljax.run import workdir


def import_pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use (with its fonts: most of
    a first plot's time, 0.5-0.6 s on the 2-core VM; the `cljax` command imports it beside
    the training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_matrices(accuracy: dict, title: str, path: str | Path):
    """Writes a PNG with one heatmap of `R[t, j]` (mean over seeds) per setting."""
    plt = import_pyplot()

    settings = list(accuracy)
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.8), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        acc = np.array(accuracy[setting], dtype=float)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN above the diagonal
            mean = np.nanmean(acc, axis=0) if acc.ndim == 3 else acc
        T = mean.shape[0]
        ax.imshow(np.ma.masked_invalid(mean), vmin=0, vmax=100, cmap="viridis")
        if T <= 10:
            for t in range(T):
                for j in range(t + 1):
                    ax.text(
                        j,
                        t,
                        f"{mean[t, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if mean[t, j] < 60 else "black",
                    )
        ax.set_title(f"{setting}: final avg {np.mean(mean[-1]):.1f}")
        ax.set_xlabel("evaluated on task j")
        ax.set_ylabel("after training task t")
    fig.suptitle(title)
    fig.tight_layout()
    with workdir.replaced(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def sample_grid(images, labels, title: str, path: str | Path, per_row: int | None = None):
    """Writes a PNG grid of generated images (N, H, W[, C]) in [0, 1]; one row per class if labelled."""
    plt = import_pyplot()

    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    n = len(images)
    if per_row is None:
        per_row = (
            int(np.sum(labels == labels[0])) if labels is not None else int(np.ceil(np.sqrt(n)))
        )
    rows = int(np.ceil(n / per_row))
    fig, axes = plt.subplots(
        rows, per_row, figsize=(per_row * 0.8, rows * 0.8 + 0.4), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes[i // per_row, i % per_row]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with workdir.replaced(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def write_samples(method, folder, num_tasks: int, t: int, state, keys):
    """`on_task` callback of `train.run`: a PNG grid of the first seed's generated samples
    (`method.host.sample`) after task t, as `folder/task{t + 1}.png`."""
    import jax

    first = jax.tree.map(lambda a: a[0], (state, keys))
    images, labels = jax.jit(method.host.sample)(*first)
    path = Path(folder) / f"task{t + 1}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    title = f"{method.name} samples after task {t + 1}/{num_tasks}"
    sample_grid(np.asarray(images), None if labels is None else np.asarray(labels), title, path)


def accuracy_over_time(steps, accuracy, title: str, path: str | Path):
    """Writes a PNG of accuracy (percent, `(points, seeds)`) against training steps: mean over
    seeds with their min-max band (a stream evaluated every N steps)."""
    plt = import_pyplot()

    acc = np.asarray(accuracy, dtype=float)
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    ax.plot(steps, acc.mean(1), marker="o", markersize=3)
    if acc.shape[1] > 1:
        ax.fill_between(steps, acc.min(1), acc.max(1), alpha=0.25, linewidth=0)
    ax.set_xlabel("training steps")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    with workdir.replaced(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def grid(summary: dict, path: str | Path):
    """Writes a PNG of a grid's final accuracy (mean over seeds, with their std) against each
    swept setting, one line per combination of the other settings (`cljax.run.sweep.summary`)."""
    plt = import_pyplot()

    names = list(summary["swept"])
    setting = summary["ranked_by"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        others = [n for n in names if n != name]
        lines: dict = {}
        for row in summary["points"]:
            label = ", ".join(f"{n}={row['values'][n]:g}" for n in others)
            acc = row["final_average_accuracy"][setting]
            lines.setdefault(label, []).append((row["values"][name], acc["mean"], acc["std"]))
        for label, pts in lines.items():
            pts.sort()
            xs, means, stds = (np.array(v) for v in zip(*pts, strict=True))
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label or None)
        if len(summary["swept"][name]) > 2 and min(summary["swept"][name]) > 0:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(f"{setting} accuracy ({summary['measure']}, %)")
        ax.grid(alpha=0.3)
        if others:
            ax.legend(fontsize=7)
    fig.suptitle(f"{summary['method']} on {summary['benchmark']}, {len(summary['seeds'])} seeds")
    fig.tight_layout()
    with workdir.replaced(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
