"""The results format: what `results.json` holds, its schema, its provenance, and reading it.

Every run's results carry `schema_version` (`SCHEMA_VERSION`) and are described
by the JSON Schema `cljax/outputs/results.schema.json` (`schema()`), so tools outside
cljax can read them. `provenance` is where a result came from: the package
version, the git commit (and whether the tree had uncommitted changes) when
cljax runs from a checkout, the versions of jax, jaxlib, flax and optax, the
devices, and the md5 of every data file the process read. `load(path)` returns
a results file as a `Results`.

Version history: 1 (cljax 0.1.0) added `schema_version` and `provenance`;
files without them are read as version 0 (the same fields otherwise).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
SCHEMA_FILE = "results.schema.json"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


class ResultsError(ValueError):
    """A results file that cannot be read as results (the message says which and why)."""


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    """The JSON Schema of a results file (draft 2020-12)."""
    return json.loads((resources.files("cljax.outputs") / SCHEMA_FILE).read_text())


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_state() -> dict | None:
    """`{"commit", "dirty"}` of the checkout cljax is imported from, or None (an installed
    wheel, or no git): dirty is True when tracked files differ from the commit."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        run = functools.partial(
            subprocess.run, capture_output=True, text=True, timeout=10, check=True, cwd=root
        )
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        changed = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(changed)}


def provenance() -> dict:
    """Where a result comes from: code, library versions, devices, data files read."""
    import jax

    from cljax import __version__
    from cljax.benchmarks.data import files_read

    devices = jax.devices()
    return {
        "cljax": __version__,
        "git": git_state(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "platform": platform.platform(),
        "backend": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "data_files": [{"path": p, "md5": m} for p, m in files_read().items()],
        "argv": list(sys.argv),
    }


@dataclasses.dataclass(frozen=True)
class Stat:
    """Mean and standard deviation over seeds, and each seed's value (in `seeds` order)."""

    mean: float
    std: float
    per_seed: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Results:
    """A results file, typed. `raw` is the whole JSON object (fields not named here too)."""

    schema_version: int
    method: str
    benchmark: str
    buffer_size: int | None
    seeds: tuple[int, ...]
    settings: tuple[str, ...]
    hparams: dict
    tasks_done: int
    final_average_accuracy: dict[str, Stat]
    timing: dict
    provenance: dict | None
    raw: dict = dataclasses.field(repr=False)

    def accuracy(self, setting: str) -> np.ndarray:
        """`[seed, after task i, on task j]` accuracy in `setting` (NaN: not measured)."""
        if setting not in self.raw["accuracy"]:
            raise KeyError(f"no {setting!r} accuracy; these results have {list(self.settings)}")
        return np.array(self.raw["accuracy"][setting], dtype=float)

    @property
    def finished(self) -> bool:
        return bool(self.final_average_accuracy)


def _stat(entry: dict) -> Stat:
    return Stat(float(entry["mean"]), float(entry["std"]), tuple(entry.get("per_seed", ())))


def validate(obj: dict) -> list[str]:
    """What makes `obj` not a results object of the schema (empty: valid). Needs the
    `jsonschema` package (`pip install jsonschema`)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]


def parse(obj: dict, where: str = "results") -> Results:
    """`obj` (a results JSON object) as `Results`; ResultsError if it is not one."""
    if not isinstance(obj, dict):
        raise ResultsError(f"{where}: not a JSON object but a {type(obj).__name__}")
    version = obj.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultsError(
            f"{where}: schema_version {version!r}, this cljax reads up to {SCHEMA_VERSION}; "
            "upgrade cljax to read it"
        )
    required = schema()["required"]
    missing = [k for k in required if k not in obj and not (version == 0 and k in NEW_IN_1)]
    if missing:
        raise ResultsError(f"{where}: not a cljax results file (missing {', '.join(missing)})")
    return Results(
        schema_version=version,
        method=obj["method"],
        benchmark=obj["benchmark"],
        buffer_size=obj["buffer_size"],
        seeds=tuple(obj["seeds"]),
        settings=tuple(obj["settings"]),
        hparams=dict(obj["hparams"]),
        tasks_done=obj["tasks_done"],
        final_average_accuracy={
            s: _stat(v) for s, v in obj.get("final_average_accuracy", {}).items()
        },
        timing=dict(obj["timing"]),
        provenance=obj.get("provenance"),
        raw=obj,
    )


NEW_IN_1 = ("schema_version", "provenance")


def load(path) -> Results:
    """The results file at `path` (a `results.json`, or a run folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"no results file at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"cannot read {path} as JSON: {e}") from e
    return parse(obj, str(path))
