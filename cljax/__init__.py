"""cljax: continual learning in JAX/Flax (see README.md).

The package in layers: `core` (the replay buffer, exemplar selection, class masks, the
QP solver, declared hyperparameters), `benchmarks` (datasets, scenarios, streams),
`models`, `methods` (one file each), `tuned` (their tuned settings), `run` (the
driver; `train` is its public face), `outputs` (metrics, results, reports, plots,
loggers) and `cli`.

The three modules the README uses by their short names stay importable that way,
`from cljax import buffer, scenarios, results`, and load on first use.
"""

import importlib

__version__ = "0.1.0"

_SHORT_NAMES = {
    "buffer": "cljax.core.buffer",
    "scenarios": "cljax.benchmarks.scenarios",
    "results": "cljax.outputs.results",
}


def __getattr__(name: str):
    if name in _SHORT_NAMES:
        return importlib.import_module(_SHORT_NAMES[name])
    raise AttributeError(f"module 'cljax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SHORT_NAMES])
