"""Continual-learning metrics from an accuracy matrix.

`R[t, j]` is the accuracy (percent) on task j's test set after training task t,
for t, j in [0, T). Entries with j > t may be NaN (not evaluated). Every
function takes one matrix `(T, T)`; use `summarize` for a stack of seeds.

- final average accuracy: mean_j R[T-1, j]
- average incremental accuracy: mean_t (mean_{j<=t} R[t, j])
- forgetting (Chaudhry et al. 2018): mean_{j<T-1} max_{t in [j, T-2]} R[t, j] - R[T-1, j]
- backward transfer (Lopez-Paz & Ranzato 2017): mean_{j<T-1} R[T-1, j] - R[j, j]
"""

from __future__ import annotations

import numpy as np


def _square(acc) -> np.ndarray:
    acc = np.asarray(acc, dtype=np.float64)
    if acc.ndim != 2 or acc.shape[0] != acc.shape[1]:
        raise ValueError(f"accuracy matrix must be square (T, T), got shape {acc.shape}")
    return acc


def final_average_accuracy(acc) -> float:
    """Mean accuracy over all tasks after the last task."""
    return float(np.mean(_square(acc)[-1]))


def average_incremental_accuracy(acc) -> float:
    """Mean over steps t of the mean accuracy on tasks seen so far."""
    acc = _square(acc)
    return float(np.mean([np.mean(acc[t, : t + 1]) for t in range(acc.shape[0])]))


def forgetting(acc) -> float:
    """Mean drop from each old task's best accuracy to its final accuracy (0 for one task)."""
    acc = _square(acc)
    T = acc.shape[0]
    if T < 2:
        return 0.0
    drops = [np.max(acc[j : T - 1, j]) - acc[T - 1, j] for j in range(T - 1)]
    return float(np.mean(drops))


def backward_transfer(acc) -> float:
    """Mean change of each old task's accuracy from just after learning it to the end."""
    acc = _square(acc)
    T = acc.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([acc[T - 1, j] - acc[j, j] for j in range(T - 1)]))


def accuracy_after_each_task(accs) -> np.ndarray:
    """`A_t` = mean_{j<=t} R[t, j] for every t, per seed: `(S, T, T) -> (S, T)` (NaN if not run)."""
    accs = np.asarray(accs, dtype=np.float64)
    T = accs.shape[-1]
    with np.errstate(invalid="ignore"):
        return np.stack([accs[..., t, : t + 1].mean(-1) for t in range(T)], -1)


METRICS = {
    "final_average_accuracy": final_average_accuracy,
    "average_incremental_accuracy": average_incremental_accuracy,
    "forgetting": forgetting,
    "backward_transfer": backward_transfer,
}


def summarize(accs) -> dict[str, dict[str, float]]:
    """Mean and std over seeds of every metric, for a stack of matrices `(S, T, T)`."""
    accs = np.asarray(accs, dtype=np.float64)
    out = {}
    for name, fn in METRICS.items():
        values = np.array([fn(a) for a in accs])
        out[name] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "per_seed": values.tolist(),
        }
    return out
