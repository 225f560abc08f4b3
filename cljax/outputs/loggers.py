"""Loggers of a run (`cljax --log csv tensorboard wandb`), as Avalanche's and Mammoth's.

Each logger is told, as the run goes: the hyperparameters and run settings
(`start`), each compiled chunk's mean losses per seed (`chunk`, the numbers the
progress bar shows), each task's accuracy row per seed and setting (`task`), and
at the end the final metrics and the timing (`finish`). `Loggers` fans them out;
`train.run(..., logger=...)` calls it on host 0.

- `csv` (no extra needed): `WORKDIR/logs/losses.csv` (task, chunk, step, seed,
  one column per loss), `accuracy.csv` (setting, after_task, seed, on_task,
  accuracy), `final.csv` (setting, metric, mean, std), `hparams.csv` (key, value),
  `timing.csv` (key, value). A resumed run appends: the chunks it trains again
  after its checkpoint appear twice, with the same step.
- `tensorboard` (`pip install 'cljax[tensorboard]'`, tensorboardX: no TensorFlow):
  event files in `WORKDIR/tensorboard`: `loss/NAME` (mean over seeds) and
  `loss/NAME/seed_S` by step, `accuracy/SETTING/seen` (mean over the tasks seen,
  over seeds) and `accuracy/SETTING/task_J` by task, the final metrics under
  `final/`, the timing under `timing/`, the hyperparameters as text and as
  TensorBoard hparams.
- `wandb` (`pip install 'cljax[wandb]'`): one W&B run in `WORKDIR/wandb`, the
  same keys, hyperparameters as its config, final metrics in its summary; set
  `WANDB_MODE=offline` to log without an account (`wandb sync` uploads later).

A logger that cannot start (its package missing, W&B not logged in) raises
`LoggerError` with a one-line message before training starts.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
from pathlib import Path

NAMES = ("csv", "tensorboard", "wandb")
EXTRA = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


class LoggerError(RuntimeError):
    """A logger that cannot start; the message says how to fix it."""


def _flat(d: dict, prefix: str = "") -> dict:
    """`{"a": {"b": 1}}` -> `{"a/b": 1}`; lists and other values are kept as they are."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "/"))
        else:
            out[key] = v
    return out


def _scalar_hparams(hparams: dict) -> dict:
    """The hyperparameters as numbers, booleans and strings (what W&B and TensorBoard take)."""
    return {
        k: v if isinstance(v, (int, float, bool, str)) else json.dumps(v)
        for k, v in _flat(hparams).items()
    }


def final_metrics(results: dict) -> dict:
    """`{"final/METRIC/SETTING": mean}` of a results dict's summaries."""
    out = {}
    for metric in (
        "final_average_accuracy",
        "average_incremental_accuracy",
        "forgetting",
        "backward_transfer",
    ):
        for setting, stat in results.get(metric, {}).items():
            out[f"final/{metric}/{setting}"] = stat["mean"]
    return out


def timing(results: dict) -> dict:
    """`{"timing/KEY": seconds or count}` of a results dict's timing."""
    return {
        f"timing/{k}": v
        for k, v in results.get("timing", {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class Logger:
    """What every logger is told (each method a no-op here)."""

    def start(self, info: dict) -> None:
        """`info`: `method`, `benchmark`, `seeds`, `hparams` (the method's and the run's)."""

    def chunk(self, task: int, chunk: int, step: int, losses: dict) -> None:
        """`losses`: `{name: [mean over the chunk's steps, per seed]}` after `step` steps."""

    def task(self, task: int, accuracy: dict) -> None:
        """`accuracy`: `{setting: [[accuracy on task 0..task] per seed]}` after `task`."""

    def finish(self, results: dict) -> None:
        """The run's results dict (`cljax.outputs.results`), once written."""

    def close(self) -> None:
        """Flushes and closes (also after a failed or interrupted run)."""


class CsvLogger(Logger):
    """CSV files in `WORKDIR/logs` (see the module's docstring)."""

    def __init__(self, workdir):
        self.dir = Path(workdir) / "logs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seeds: list[int] = []
        self.loss_names: list[str] | None = None

    def _append(self, name: str, header: list[str], rows) -> None:
        path = self.dir / name
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(header)
            writer.writerows(rows)

    def _write(self, name: str, header: list[str], rows) -> None:
        with (self.dir / name).open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    def start(self, info):
        self.seeds = list(info["seeds"])
        rows = sorted(_scalar_hparams(info["hparams"]).items())
        self._write("hparams.csv", ["key", "value"], rows)

    def chunk(self, task, chunk, step, losses):
        if self.loss_names is None:
            self.loss_names = sorted(losses)
        rows = [
            [task + 1, chunk + 1, step, seed, *(losses[k][i] for k in self.loss_names)]
            for i, seed in enumerate(self.seeds)
        ]
        self._append("losses.csv", ["task", "chunk", "step", "seed", *self.loss_names], rows)

    def task(self, task, accuracy):
        rows = [
            [setting, task + 1, seed, j + 1, acc]
            for setting, per_seed in accuracy.items()
            for seed, row in zip(self.seeds, per_seed, strict=True)
            for j, acc in enumerate(row)
        ]
        header = ["setting", "after_task", "seed", "on_task", "accuracy"]
        self._append("accuracy.csv", header, rows)

    def finish(self, results):
        rows = []
        for key, mean in final_metrics(results).items():
            _, metric, setting = key.split("/")
            std = results[metric][setting]["std"]
            rows.append([setting, metric, mean, std])
        self._write("final.csv", ["setting", "metric", "mean", "std"], rows)
        self._write(
            "timing.csv", ["key", "value"], [[k[7:], v] for k, v in timing(results).items()]
        )


def _require(name: str):
    module, extra = EXTRA[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LoggerError(
            f"--log {name} needs the {module} package: pip install 'cljax[{extra}]' "
            f"(or pip install {module})"
        ) from None


class TensorBoardLogger(Logger):
    """TensorBoard event files in `WORKDIR/tensorboard`, through tensorboardX."""

    def __init__(self, workdir):
        self.tbx = _require("tensorboard")
        self.writer = self.tbx.SummaryWriter(logdir=str(Path(workdir) / "tensorboard"))
        self.seeds: list[int] = []
        self.hparams: dict = {}

    def start(self, info):
        self.seeds = list(info["seeds"])
        self.hparams = _scalar_hparams(info["hparams"])
        text = "\n".join(f"    {k}: {v}" for k, v in sorted(self.hparams.items()))
        self.writer.add_text("hparams", f"{info['method']} on {info['benchmark']}\n\n{text}")

    def chunk(self, task, chunk, step, losses):
        for name, per_seed in losses.items():
            self.writer.add_scalar(f"loss/{name}", sum(per_seed) / len(per_seed), step)
            for seed, value in zip(self.seeds, per_seed, strict=True):
                self.writer.add_scalar(f"loss/{name}/seed_{seed}", value, step)

    def task(self, task, accuracy):
        for setting, per_seed in accuracy.items():
            seen = [sum(row) / len(row) for row in per_seed]
            self.writer.add_scalar(f"accuracy/{setting}/seen", sum(seen) / len(seen), task + 1)
            for j in range(len(per_seed[0])):
                mean_j = sum(row[j] for row in per_seed) / len(per_seed)
                self.writer.add_scalar(f"accuracy/{setting}/task_{j + 1}", mean_j, task + 1)

    def finish(self, results):
        final = final_metrics(results)
        for key, value in {**final, **timing(results)}.items():
            self.writer.add_scalar(key, value, results.get("tasks_done", 0))
        self.writer.add_hparams(self.hparams, final, name="hparams")

    def close(self):
        self.writer.close()


def _check_wandb_login(wandb) -> None:
    """LoggerError unless W&B runs offline or has a key (`wandb login`, WANDB_API_KEY)."""
    if os.environ.get("WANDB_MODE", "online") in ("offline", "disabled", "dryrun"):
        return
    if os.environ.get("WANDB_API_KEY"):
        return
    try:
        key = wandb.api.api_key
    except Exception:  # any failure to find a key is "not logged in"
        key = None
    if not key:
        raise LoggerError(
            "--log wandb: not logged in to W&B; run `wandb login`, set WANDB_API_KEY, or "
            "set WANDB_MODE=offline to log locally (`wandb sync` uploads later)"
        )


class WandbLogger(Logger):
    """One Weights & Biases run in `WORKDIR/wandb` (offline with `WANDB_MODE=offline`)."""

    def __init__(self, workdir):
        self.wandb = _require("wandb")
        self.workdir = Path(workdir)
        self.run = None
        self.seeds: list[int] = []
        _check_wandb_login(self.wandb)

    def start(self, info):
        self.seeds = list(info["seeds"])
        (self.workdir / "wandb").mkdir(parents=True, exist_ok=True)
        try:
            self.run = self.wandb.init(
                project=os.environ.get("WANDB_PROJECT", "cljax"),
                name=f"{info['method']}-{info['benchmark']}",
                dir=str(self.workdir),
                config={
                    "method": info["method"],
                    "benchmark": info["benchmark"],
                    "seeds": self.seeds,
                    **_scalar_hparams(info["hparams"]),
                },
            )
        except Exception as e:  # W&B raises many types; one line either way
            raise LoggerError(f"--log wandb could not start a run: {str(e).splitlines()[0]}") from e

    def chunk(self, task, chunk, step, losses):
        row = {"step": step, "task": task + 1}
        for name, per_seed in losses.items():
            row[f"loss/{name}"] = sum(per_seed) / len(per_seed)
            row.update(
                {f"loss/{name}/seed_{s}": v for s, v in zip(self.seeds, per_seed, strict=True)}
            )
        self.run.log(row)

    def task(self, task, accuracy):
        row = {"task": task + 1}
        for setting, per_seed in accuracy.items():
            seen = [sum(r) / len(r) for r in per_seed]
            row[f"accuracy/{setting}/seen"] = sum(seen) / len(seen)
            for j in range(len(per_seed[0])):
                row[f"accuracy/{setting}/task_{j + 1}"] = sum(r[j] for r in per_seed) / len(
                    per_seed
                )
        self.run.log(row)

    def finish(self, results):
        self.run.summary.update({**final_metrics(results), **timing(results)})

    def close(self):
        if self.run is not None:
            self.run.finish()
            self.run = None


CLASSES = {"csv": CsvLogger, "tensorboard": TensorBoardLogger, "wandb": WandbLogger}


class Loggers(Logger):
    """Several loggers as one (`make`)."""

    def __init__(self, loggers):
        self.loggers = list(loggers)

    def start(self, info):
        for lg in self.loggers:
            lg.start(info)

    def chunk(self, task, chunk, step, losses):
        for lg in self.loggers:
            lg.chunk(task, chunk, step, losses)

    def task(self, task, accuracy):
        for lg in self.loggers:
            lg.task(task, accuracy)

    def finish(self, results):
        for lg in self.loggers:
            lg.finish(results)

    def close(self):
        for lg in self.loggers:
            lg.close()


def check(names) -> None:
    """LoggerError (one line) for an unknown logger, or one whose package is missing or
    that is not logged in; writes nothing."""
    for name in names or ():
        if name not in CLASSES:
            raise LoggerError(f"unknown logger {name!r}; choose from {', '.join(NAMES)}")
        if name in EXTRA:
            module = _require(name)
            if name == "wandb":
                _check_wandb_login(module)


def make(names, workdir) -> Loggers | None:
    """The loggers `names` (any of `NAMES`) writing into `workdir`, or None for none;
    LoggerError (one line) for an unknown name or one that cannot start."""
    names = list(dict.fromkeys(names or ()))
    check(names)
    if not names:
        return None
    made = []
    try:
        for name in names:
            made.append(CLASSES[name](workdir))
    except BaseException:
        for lg in made:
            lg.close()
        raise
    return Loggers(made)
