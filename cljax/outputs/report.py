"""The results dictionary of a run (what `results.json` holds)."""

from __future__ import annotations

import json

import numpy as np

from cljax.outputs import metrics as metrics_lib
from cljax.outputs import results as results_format
from cljax.run import workdir


def recorded_hparams(method_hparams: dict, config) -> dict:
    """The `hparams` a run's results record: the method's, plus the run settings of
    `config` (a `train.RunConfig`) that change what is learned and what `config.record`
    adds (the CLI's backbone, dtype and class order)."""
    return {
        **method_hparams,
        "batch_size": config.batch_size,
        "n_epochs": config.epochs,
        "last_batch": config.last_batch,
        **({"first_epochs": config.first_epochs} if config.first_epochs else {}),
        **config.lr_schedule(),
        **config.record,
    }


def results(
    method,
    scenario,
    config,
    acc,
    timing,
    losses,
    per_task=None,
    after_task=None,
    after_chunk=None,
    settings=("class-il", "task-il"),
) -> dict:
    """The results dictionary written to `results.json`.

    `per_task` ([task][seed], the method's `host.describe`), `after_task` and
    `after_chunk` (the driver's measurements) are recorded when given; `settings` are
    those the run scores (`RunPlan.settings`).
    """
    # a single-setting benchmark (one head, all classes seen) is scored by the class-IL pass
    accuracy = {s: acc["class-il" if s == scenario.single_setting else s] for s in settings}
    done = int(np.sum(~np.isnan(next(iter(accuracy.values()))[0].diagonal())))
    summary = {}
    if done == scenario.num_tasks:
        summary = {s: metrics_lib.summarize(a) for s, a in accuracy.items()}
    steps, train_s = timing["steps"], timing["train_s"]
    out = {
        "schema_version": results_format.SCHEMA_VERSION,
        "method": method.name,
        "benchmark": scenario.name,
        "buffer_size": method.hparams.get("buffer_size"),
        "seeds": list(config.seeds),
        "hparams": recorded_hparams(method.hparams, config),
        "settings": list(accuracy),
        **({"class_il": config.class_il} if "class-il" in accuracy else {}),
        "tasks_done": done,
        "accuracy": {s: _nan_to_none(a) for s, a in accuracy.items()},
        "timing": {
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in timing.items()},
            "steps_per_s": round(steps / train_s, 1) if train_s else None,
            "samples_per_s": (
                round(steps * config.batch_size * len(config.seeds) / train_s, 1)
                if train_s
                else None
            ),
        },
        "final_train_loss": losses,
        "provenance": results_format.provenance(),
    }
    out.update(_summaries(accuracy, summary))
    for key, value in (("per_task", per_task), ("after_task", after_task)):
        if value is not None:
            out[key] = value
    if after_chunk is not None:
        out["after_chunk"] = after_chunk
    return out


def _summaries(accuracy, summary) -> dict:
    """`A_n` and every metric of `metrics.METRICS`, mean and std over seeds, per setting."""
    out = {
        "A_n": {
            s: {"mean": np.mean(a, 0).tolist(), "std": np.std(a, 0).tolist()}
            for s, a in ((s, metrics_lib.accuracy_after_each_task(a)) for s, a in accuracy.items())
        }
    }
    for name in metrics_lib.METRICS:
        out[name] = {s: dict(m[name]) for s, m in summary.items()}
    return out


def merge_seeds(a: dict, b: dict, allow_unfinished: bool = False) -> dict:
    """One results dict from two finished runs of the same configuration on different seeds.

    For runs that cannot share one program (methods whose shapes differ per
    seed run their seeds one after another anyway): a long reproduction can
    then add seeds across sessions. Accuracy matrices, per-task descriptions and
    extra measurements are joined seed by seed; every mean and std is recomputed
    over the union; times and step counts add up (as for seeds run one after
    another in one `train.run`). Raises ValueError when the runs differ in
    method, benchmark, hyperparameters or class-IL protocol, share a seed, or one is unfinished
    (unless `allow_unfinished`: the driver joins seeds stopped at the same point,
    and the summaries of an unfinished run stay empty, as `results` leaves them).
    """
    for key in ("method", "benchmark", "hparams", "settings"):
        if a[key] != b[key]:
            raise ValueError(
                f"cannot merge results: {key} differs ({a[key]!r} vs {b[key]!r}); "
                "rerun with the same configuration"
            )
    # results written before the protocol was recorded took class-IL over the classes seen
    protocols = [r.get("class_il", "seen") if "class-il" in r["settings"] else None for r in (a, b)]
    if protocols[0] != protocols[1]:
        raise ValueError(
            f"cannot merge results: class-IL is taken over {protocols[0]!r} outputs in one and "
            f"{protocols[1]!r} in the other; rerun with the same class_il"
        )
    if set(a["seeds"]) & set(b["seeds"]):
        raise ValueError(f"cannot merge results: seeds overlap ({a['seeds']} and {b['seeds']})")
    finished = bool(a["final_average_accuracy"]) and bool(b["final_average_accuracy"])
    if not finished and not allow_unfinished:
        raise ValueError("cannot merge results: a run is unfinished; resume it first")
    n_a, n_b = len(a["seeds"]), len(b["seeds"])
    accuracy = {  # None entries (tasks not run) become NaN; a setting not measured stays None
        s: np.concatenate([np.asarray(r["accuracy"][s], dtype=np.float64) for r in (a, b)])
        for s in a["settings"]
        if a["accuracy"][s] is not None
    }
    rates = ("steps_per_s", "samples_per_s")
    keys = dict.fromkeys([*a["timing"], *b["timing"]])  # one file may predate a key: 0 there
    timing = {k: a["timing"].get(k, 0) + b["timing"].get(k, 0) for k in keys if k not in rates}
    timing = {k: round(v, 4) if isinstance(v, float) else v for k, v in timing.items()}
    train_s = timing["train_s"]
    timing["steps_per_s"] = round(timing["steps"] / train_s, 1) if train_s else None
    samples = sum((r["timing"]["samples_per_s"] or 0) * r["timing"]["train_s"] for r in (a, b))
    timing["samples_per_s"] = round(samples / train_s, 1) if train_s else None
    losses = [np.asarray(r["final_train_loss"], dtype=np.float64) for r in (a, b)]
    out = {
        **a,
        "seeds": a["seeds"] + b["seeds"],
        "accuracy": {
            s: _nan_to_none(accuracy[s]) if s in accuracy else None for s in a["settings"]
        },
        "timing": timing,
        "final_train_loss": ((n_a * losses[0] + n_b * losses[1]) / (n_a + n_b)).tolist(),
    }
    merged = [a.get("provenance"), *a.get("merged_provenance", [])]
    for p in (b.get("provenance"), *b.get("merged_provenance", [])):
        if p is not None and p not in merged:
            merged.append(p)
    if merged[1:]:  # parts made elsewhere (another commit, machine or data)
        out["merged_provenance"] = merged[1:]
    done = {s: metrics_lib.summarize(v) for s, v in accuracy.items()} if finished else {}
    out.update(_summaries(accuracy, done))
    tasks = range(len(next(m for m in a["accuracy"].values() if m is not None)[0]))
    for key in ("per_task", "after_task"):
        if key in a or key in b:
            rows_a = a.get(key) or [[None] * n_a for _ in tasks]
            rows_b = b.get(key) or [[None] * n_b for _ in tasks]
            out[key] = [ra + rb for ra, rb in zip(rows_a, rows_b, strict=True)]
    if "after_chunk" in a or "after_chunk" in b:  # [task][chunk][seed]; None: task not measured
        rows_a, rows_b = (r.get("after_chunk") or [None for _ in tasks] for r in (a, b))
        out["after_chunk"] = [
            _join_chunks(ta, tb, n_a, n_b) for ta, tb in zip(rows_a, rows_b, strict=True)
        ]
    return out


def _join_chunks(ta, tb, n_a, n_b):
    """One task's `after_chunk` values of two runs joined seed by seed (None: not measured)."""
    if ta is None and tb is None:
        return None
    ta = ta or [[None] * n_a for _ in tb]
    tb = tb or [[None] * n_b for _ in ta]
    return [ca + cb for ca, cb in zip(ta, tb, strict=True)]


def _nan_to_none(a):
    return json.loads(json.dumps(np.asarray(a).tolist()).replace("NaN", "null"))


def write_json(path, obj) -> None:
    """Writes `obj` as JSON to `path` through a temporary file: a crash never leaves half a file."""
    with workdir.replaced(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))
