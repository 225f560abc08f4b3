"""Evaluation's public face (`cljax.run.evaluate`): the evaluator of a run after each task,
the accuracy-over-time probe and the accuracy of generated samples."""

from cljax.run.evaluate import (
    Evaluator,
    accuracy_probe,
    generated_accuracy,
    make_evaluator,
    percent_seen,
    stack_tests,
)

__all__ = [
    "Evaluator",
    "accuracy_probe",
    "generated_accuracy",
    "make_evaluator",
    "percent_seen",
    "stack_tests",
]
