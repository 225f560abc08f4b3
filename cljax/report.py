"""The results dictionary of a run (what `results.json` holds)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cljax import metrics as metrics_lib


def results(method, scenario, config, acc, timing, losses, state=None) -> dict:
    """The results dictionary written to `results.json` (plus the final `state`, not saved)."""
    if scenario.settings == ("domain-il",):
        accuracy = {"domain-il": acc["class-il"]}
    else:
        accuracy = dict(acc)
    done = int(np.sum(~np.isnan(accuracy[scenario.settings[0]][0].diagonal())))
    summary = {}
    if done == scenario.num_tasks:
        summary = {s: metrics_lib.summarize(a) for s, a in accuracy.items()}
    steps, train_s = timing["steps"], timing["train_s"]
    out = {
        "method": method.name,
        "benchmark": scenario.name,
        "buffer_size": method.hparams.get("buffer_size"),
        "seeds": list(config.seeds),
        "hparams": {**method.hparams, "batch_size": config.batch_size, "n_epochs": config.epochs},
        "settings": list(accuracy),
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
    }
    out["A_n"] = {
        s: {"mean": np.mean(a, 0).tolist(), "std": np.std(a, 0).tolist()}
        for s, a in ((s, metrics_lib.accuracy_after_each_task(a)) for s, a in accuracy.items())
    }
    for name in metrics_lib.METRICS:
        out[name] = {s: {k: v for k, v in m[name].items()} for s, m in summary.items()}
    out["state"] = state
    return out


def _nan_to_none(a):
    return json.loads(json.dumps(np.asarray(a).tolist()).replace("NaN", "null"))


def write_json(path, obj) -> None:
    """Writes `obj` as JSON to `path` through a temporary file: a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
