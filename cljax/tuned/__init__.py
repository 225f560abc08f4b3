"""Tuned settings per method, and a run's settings resolved from them.

`cljax/tuned/<method>.py` holds `TUNED`,
`{benchmark: {buffer size (None: no buffer): row}}`, each row a dict of settings (the
method's `Config` fields and the run settings `batch_size`, `n_epochs`, `first_epochs`,
`steps`, `model`) with its `source`.

`lookup(method, benchmark, buffer_size)` picks the row for that buffer size, or the
nearest tuned one. A benchmark with a larger first task (`NAME-bB`) without rows of its
own takes NAME's. A method with no file, or no row for the benchmark, runs on its
`Config` defaults and the run defaults (`RunSettings`), and `note_tuning` says so
("untuned defaults").

`resolve(method, benchmark, buffer_size, overrides)` gives a run's `Settings`: the
method's `Config` and the `RunSettings` (batch size, epochs, steps, dtype, backbone),
from the tuned row and then the overrides; a name that is neither is an error that lists
both.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from typing import NamedTuple

from cljax import methods, models, train
from cljax.core.config import Hyperparams, hparam

UNTUNED = "untuned defaults"

PAPER = "the DER paper's appendix, as kept in Mammoth's utils/best_args.py"
OURS_JOINT = "ours: the DER paper does not list JOINT's settings (SGD's are used)"
OURS_DIGITS = "ours: a small sweep on the file-free seq-digits demo (10 epochs, ~290 steps a task)"
OURS_FASHION = "ours: no published tuning on Fashion-MNIST; Seq-MNIST's row"
OURS_CIFAR100 = "ours: no published tuning on Seq-CIFAR-100; Seq-CIFAR-10's row"
OURS_SVHN = "ours: no published tuning on SVHN for this method; Seq-CIFAR-10's row"
XDER_CIFAR100 = (
    "the X-DER paper's Seq-CIFAR-100 settings: Mammoth's utils/best_args.py at its tpami2023 "
    "tag (ad4d390), with that dataset's batch 32, 50 epochs, replay minibatch 32 and its "
    "scheduler (lr x0.1 after epochs 35 and 45 of each task)"
)
OURS_ER_MNIST = (
    "ours: no published Seq-MNIST tuning; ER's Seq-MNIST protocol (one epoch at batch 10) at "
    "lr 0.1, the replay minibatch equal to the batch as Mammoth forces it (main.py:431-436)"
)
VDV_SPLIT_MNIST = (
    "van de Ven et al.'s code (GMvandeVen/continual-learning e6d795a, params/param_values.py) "
    "on splitMNIST: 2000 iterations of 128 a task, every batch full (drop_last), Adam 1e-3"
)
VDV_PERM_MNIST = (
    "van de Ven et al.'s code (GMvandeVen/continual-learning e6d795a, params/param_values.py) "
    "on permMNIST: 5000 iterations of 128 a task, every batch full (drop_last), Adam 1e-4, "
    "1000 units"
)
DGR = (
    "van de Ven et al.'s DGR settings (Adam 1e-3, chunks of 128, 2000 iterations a task); "
    "batch_size = n_critic (5) x chunk"
)
MERGAN = (
    "the MeRGAN authors' code (chunks of 64, 4001 iterations a task on MNIST, 8001 on SVHN, "
    "RA weight 1e-3 / 1e-2); batch_size = n_critic (5) x chunk"
)
DGM_MNIST = (
    "the DGM authors' MNIST settings (batches of 64, one critic step per generator step, "
    "101 epochs a task, Adam 2e-3 with beta1 0.5)"
)
DGM_SVHN = "the DGM authors' cfg_svhn_dgmw.yml (151 epochs of 64, Adam 5e-4, lamb_G 0.001)"
OURS_DYN_CPU = (
    "ours: CPU-sized runs on the cnn backbone (batch 32 plus 32 exemplars a step, two epochs); "
    "mask settings chosen so pruning keeps well under half of each extractor"
)
DYN_CIFAR100 = (
    "the DER (Yan et al.) official code's CIFAR-100 B0 recipe: no masks, 10 warm-up epochs, "
    "lr x0.1 100 and 120 epochs after them, classifier re-training at lr 0.1 for 30 epochs; "
    "its fixed class order and ColorJitter(brightness=63/255)"
)
DYN_CIFAR100_B50 = (
    "the DER (Yan et al.) official code's B50 config: 20 exemplars per class, 200 epochs of "
    "first-task pretraining (x0.1 at 60, 120, 160), re-training at lr 0.05 for 50 epochs; "
    "its fixed class order and ColorJitter(brightness=63/255)"
)


def row(source: str, **values) -> dict:
    """One tuned row: its settings and where they come from."""
    return {**values, "source": source}


def xder_cifar100(lr: float, **values) -> dict:
    """A method's Seq-CIFAR-100 rows (buffers 500 and 2000) under the X-DER paper's protocol
    (`XDER_CIFAR100`: batch 32, 50 epochs, x0.1 after 35 and 45), at `lr` with its `values`
    (a replay method's `minibatch_size=32` among them)."""
    return {
        b: row(XDER_CIFAR100, lr=lr, batch_size=32, n_epochs=50, lr_milestones=(35, 45), **values)
        for b in (500, 2000)
    }


def same_as(rows: dict, source: str) -> dict:
    """Another benchmark's rows, reused with a `source` that says so."""
    return {b: {**r, "source": source} for b, r in rows.items()}


class Tuned(NamedTuple):
    """A looked-up row: the settings, the buffer size it was tuned for, and its source."""

    values: dict
    buffer_size: int | None
    source: str


def table(method: str) -> dict:
    """`TUNED` of `cljax/tuned/<method>.py`, or of a method registered from outside the
    package (`methods.register`) its own module's `TUNED`; `{}` when it has none."""
    if method in methods._REGISTERED:
        return getattr(methods._REGISTERED[method], "TUNED", {})
    try:
        module = importlib.import_module(f"{__name__}.{method}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{method}":
            raise
        return {}
    return module.TUNED


def lookup(method: str, benchmark: str, buffer_size: int | None) -> Tuned | None:
    """The tuned row of `method` on `benchmark` for `buffer_size` (or the nearest), or None."""
    tuned = table(method)
    rows = tuned.get(benchmark) or tuned.get(re.sub(r"-b\d+$", "", benchmark))
    if not rows:
        return None
    if None in rows:
        chosen = None
    else:
        chosen = min(rows, key=lambda b: abs(b - (buffer_size or 0)))
    values = dict(rows[chosen])
    source = values.pop("source")
    if chosen is not None and buffer_size is not None:
        values["buffer_size"] = buffer_size
    return Tuned(values, chosen, source)


@dataclasses.dataclass(frozen=True)
class RunSettings(Hyperparams):
    """What the driver needs besides the method's `Config` (the defaults are the untuned ones)."""

    batch_size: int = hparam(32, "training batch size (items of the current task a step)", ge=1)
    n_epochs: int = hparam(1, "epochs per task", ge=1)
    first_epochs: int | None = hparam(None, "the first task's epochs when they differ", ge=1)
    steps: int | None = hparam(None, "optimizer steps per task; overrides n_epochs", ge=1)
    last_batch: str = hparam(
        "short",
        "an epoch's last batch when the items do not fill it: short (the items left, as "
        "Mammoth's DataLoader), fill (topped up with the epoch's first items) or drop (left "
        "out, as a DataLoader with drop_last: van de Ven's code)",
        choices=("short", "fill", "drop"),
    )
    dtype: str = hparam("float32", "the backbone's compute dtype", choices=tuple(models.DTYPES))
    model: str | None = hparam(None, "backbone (None: the benchmark's)", choices=models.MODELS)
    class_order: str = hparam(
        "label",
        "order of the classes over the tasks: label, or der (the expandable-representation "
        "code's fixed CIFAR orders)",
        choices=("label", "der"),
    )
    class_seed: int = hparam(
        0,
        "N > 0: the classes shuffled before the split into tasks as van de Ven et al.'s code "
        "shuffles them for its seed N (0: label order)",
        ge=0,
    )
    brightness: float = hparam(
        0.0, "CIFAR training colour jitter (torchvision's ColorJitter brightness)", ge=0
    )
    lr_milestones: tuple[int, ...] = hparam(
        (), "the learning rate x lr_gamma after these epochs of each task (MultiStepLR)", gt=0
    )
    lr_gamma: float = hparam(0.1, "the learning rate's factor at each milestone", ge=0)
    class_il: str = hparam(
        "all",
        "class-IL accuracy's argmax: over all outputs (as Mammoth) or the classes seen so far",
        choices=("all", "seen"),
    )

    @classmethod
    def owner(cls) -> str:
        return "run setting"

    def record(self, benchmark_model: str) -> dict:
        """What results.json records of these settings beside `RunConfig`'s own (batch size,
        epochs, last batch): dtype, steps, the backbone (the benchmark's when not set) and,
        when a CIFAR recipe changed them, the class order and brightness."""
        out = {"dtype": self.dtype, "steps": self.steps, "model": self.model or benchmark_model}
        if self.class_order != "label" or self.brightness:
            out.update(class_order=self.class_order, brightness=self.brightness)
        if self.class_seed:
            out.update(class_seed=self.class_seed)
        return out

    def run_config(self, **fields) -> train.RunConfig:
        """The `train.RunConfig` of these settings plus `fields` (seeds, progress, ...)."""
        return train.RunConfig(
            epochs=self.n_epochs,
            batch_size=self.batch_size,
            steps=self.steps,
            first_epochs=self.first_epochs,
            last_batch=self.last_batch,
            class_il=self.class_il,
            lr_milestones=self.lr_milestones,
            lr_gamma=self.lr_gamma,
            **fields,
        )


class Settings(NamedTuple):
    """Everything a run of `method` on a benchmark is configured by."""

    method: str
    config: Hyperparams  # the method's Config
    run: RunSettings
    tuned: Tuned | None  # None: untuned defaults

    def tuned_record(self):
        """What results.json says about tuning."""
        if self.tuned is None:
            return UNTUNED
        return {"source": self.tuned.source, "buffer_size": self.tuned.buffer_size}


def parse_overrides(method: str, items) -> dict:
    """`--set KEY=VALUE` items as typed values (ValueError, one line, for a bad one)."""
    config_cls = methods.get(method).Config
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        owner = RunSettings if key in RunSettings.names() else config_cls
        if key not in owner.names():
            raise ValueError(
                f"--set {key}: {method} has no such setting; choose from "
                f"{', '.join(sorted((*config_cls.names(), *RunSettings.names())))}"
            )
        out[key] = owner.parse(key, text)
    return out


def resolve(method: str, benchmark: str, buffer_size: int | None, overrides=None) -> Settings:
    """The tuned row of `method` on `benchmark` (nearest buffer size), then `overrides`."""
    module = methods.get(method)
    tuned = lookup(method, benchmark, buffer_size)
    values = dict(tuned.values) if tuned else {}
    if tuned is None and buffer_size and "buffer_size" in module.Config.names():
        values["buffer_size"] = buffer_size
    values.update(overrides or {})
    run = RunSettings.build({k: v for k, v in values.items() if k in RunSettings.names()})
    config = module.Config.build({k: v for k, v in values.items() if k not in run.names()})
    if hasattr(module, "check_run"):
        module.check_run(config, run.batch_size)
    return Settings(method, config, run, tuned)


def note_tuning(settings: Settings, benchmark: str, buffer_size: int | None) -> None:
    """Says on stderr when a run is untuned, or tuned for another buffer size."""
    tuned = settings.tuned
    if tuned is None:
        print(
            f"note: no tuned settings for {settings.method} on {benchmark}: running "
            f"{UNTUNED} (see cljax/tuned/)",
            file=sys.stderr,
        )
    elif tuned.buffer_size is not None and buffer_size and tuned.buffer_size != buffer_size:
        print(
            f"note: no tuned row for buffer {buffer_size}; using buffer {tuned.buffer_size}'s",
            file=sys.stderr,
        )


def model_of(settings: Settings, scenario):
    """The backbone `settings` run on `scenario` (its own, unless the settings name one)."""
    run = settings.run
    return models.make(run.model or scenario.model, scenario.num_classes, run.dtype)


def build(settings: Settings, scenario):
    """The `Method` of `settings` on `scenario`'s backbone."""
    module = methods.get(settings.method)
    return module.make(
        settings.config, model=model_of(settings, scenario), input_fn=scenario.input_fn
    )
