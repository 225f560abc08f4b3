"""The driver, one owner a concern: `plan` (the run's shape, pure numpy), `feed` (where the
data comes from: shared arrays, per-seed pixel maps or a stream), `compiled` (the scanned
chunk and its health), `chunks` (one task's chunks), `execute` (the per-task loop),
`evaluate`, `checkpointing` (with `checkpoint_io`, the orbax layer), and `api` (`run`,
`RunConfig`, the exceptions), whose public names `cljax.train` hands on. Beside them, the
run's surroundings: `sharding` (meshes, host devices), `workdir` (lock, checks) and
`jit_cache` (the compilation cache).

The names below load on first use, so `from cljax.run import sharding` can ask for host
devices before anything starts JAX's backend.
"""

import importlib

_NAMES = {
    "Diverged": "api",
    "Hooks": "api",
    "Interrupted": "api",
    "RunConfig": "api",
    "StopRequest": "api",
    "run": "api",
    "mesh_of": "execute",
    "RunPlan": "plan",
    "TaskPlan": "plan",
    "plan_run": "plan",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"cljax.run.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'cljax.run' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_NAMES])
