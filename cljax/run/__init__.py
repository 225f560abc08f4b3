"""The driver, one owner a concern: `plan` (the run's shape, pure numpy), `feed` (where the
data comes from: shared arrays, per-seed pixel maps or a stream), `compiled` (the scanned
chunk and its health), `chunks` (one task's chunks), `execute` (the per-task loop),
`evaluate`, `checkpointing`, and `api` (`run`, `RunConfig`, the exceptions), whose public
names `cljax.train` hands on."""

from cljax.run.api import Diverged, Hooks, Interrupted, RunConfig, StopRequest, run
from cljax.run.execute import mesh_of
from cljax.run.plan import RunPlan, TaskPlan, plan_run

__all__ = [
    "Diverged",
    "Hooks",
    "Interrupted",
    "RunConfig",
    "RunPlan",
    "StopRequest",
    "TaskPlan",
    "mesh_of",
    "plan_run",
    "run",
]
