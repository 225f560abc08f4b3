"""The driver's public face, as the README uses it: `train.run(method, scenario, config)`.

The driver itself is the `cljax.run` package (the run plan, the feed, the compiled chunk,
the per-task loop, evaluation, checkpoints); this module hands its public names on.
"""

from cljax.run.api import (
    Diverged,
    Hooks,
    Interrupted,
    RunConfig,
    SeedsRun,
    StopRequest,
    log_tasks,
    run,
    schedule,
    step_sizes,
    task_info,
)

__all__ = [
    "Diverged",
    "Hooks",
    "Interrupted",
    "RunConfig",
    "SeedsRun",
    "StopRequest",
    "log_tasks",
    "run",
    "schedule",
    "step_sizes",
    "task_info",
]
