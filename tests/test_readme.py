"""The README's composing example runs as written."""

import re
from pathlib import Path


def test_readme_method_example_runs():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = next(b for b in blocks if "train.run(" in b)
    scope = {}
    exec(compile(example, "README.md", "exec"), scope)
    res = scope["results"]
    assert res["method"] == "derpp" and res["seeds"] == [0, 1, 2]
    assert res["hparams"]["alpha"] == 0.3
    assert res["final_average_accuracy"]["class-il"]["mean"] > 20


def test_readme_own_loop_runs():
    """The README's loop over tasks calls every contract function of a method (iCaRL: a
    pool, boundary functions) and ends with a prediction."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = next(b for b in blocks if "method.begin_task_data(" in b)
    scope = {}
    exec(compile(example, "README.md", "exec"), scope)
    logits, scenario = scope["logits"], scope["scenario"]
    assert logits.shape == (len(scenario.test(0)[1]), scenario.num_classes)
    assert int(scope["valid"].sum()) > 0  # the exemplars were offered to the last task
