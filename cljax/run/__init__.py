"""The driver's parts that stand on their own: the run plan (`plan_run`, `RunPlan`,
`TaskPlan`), pure numpy, read by the driver (`cljax.train`), the CLI and the tests."""

from cljax.run.plan import RunPlan, TaskPlan, plan_run

__all__ = ["RunPlan", "TaskPlan", "plan_run"]
