"""Class-IL evaluation protocols: the argmax over every output (Mammoth's, the default) or
over the classes seen so far (issue 46 item 3)."""

import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods, models, train, tuned
from cljax.outputs import report
from cljax.run import evaluate as evaluation
from cljax.run import sharding
from tests.conftest import tiny_scenario

SC = tiny_scenario(num_tasks=3)


def _rows(over: str):
    """Task 0's class-IL accuracy of a stand-in method whose every logit is 0 but the last
    class's (one not seen until the last task), at 5."""
    mesh = sharding.make_mesh(1)
    (x, y, v), masks, counts, batch = evaluation.stack_tests(SC, 1000, mesh)

    def predict(state, xb):
        del state
        return jnp.zeros((xb.shape[0], SC.num_classes)).at[:, -1].set(5.0)

    method = type("M", (), {"predict": staticmethod(predict)})
    evaluate = evaluation.make_evaluator(method, batch, mesh)
    state = jnp.zeros((1,))
    t = 0
    active = np.arange(SC.num_tasks) <= t
    cil, _ = evaluate(state, x, y, v, active, evaluation.class_il_outputs(masks, t, over), masks)
    return evaluation.percent_seen(cil, counts, t)


def test_class_il_outputs_are_every_output_or_the_classes_seen():
    masks = np.zeros((3, 6), bool)
    for t in range(3):
        masks[t, 2 * t : 2 * t + 2] = True
    assert evaluation.class_il_outputs(masks, 0, "all").all()
    np.testing.assert_array_equal(evaluation.class_il_outputs(masks, 0, "seen"), [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(
        evaluation.class_il_outputs(masks, 2, "seen"), evaluation.class_il_outputs(masks, 2, "all")
    )
    with pytest.raises(ValueError, match="class_il must be one of"):
        evaluation.class_il_outputs(masks, 0, "masked")


def test_an_unseen_class_logit_counts_against_class_il_over_all_outputs_only():
    # the last class's logit beats every other: over all outputs nothing of task 0 is right;
    # over the classes seen (0 and 1, all at logit 0) the argmax is class 0, right on half
    assert _rows("all").tolist() == [[0.0]]
    assert _rows("seen").tolist() == [[50.0]]


def _run(class_il: str):
    method = methods.get("lwf").make(
        model=models.MLP((8,), SC.num_classes), input_fn=SC.input_fn, lr=0.05
    )
    config = train.RunConfig(
        epochs=1, batch_size=4, seeds=(0, 1), progress=False, class_il=class_il
    )
    return train.run(method, SC, config)


def test_a_run_records_its_protocol_and_the_protocols_agree_after_the_last_task():
    every, seen = _run("all"), _run("seen")
    assert every["class_il"] == "all" and seen["class_il"] == "seen"
    a = np.array(every["accuracy"]["class-il"], float)
    s = np.array(seen["accuracy"]["class-il"], float)
    np.testing.assert_array_equal(a[:, -1], s[:, -1])  # the last row: every class seen
    np.testing.assert_array_equal(every["accuracy"]["task-il"], seen["accuracy"]["task-il"])
    # an argmax over more outputs can only lose hits: never above, and below somewhere (LwF
    # masks its cross-entropy to the task's classes, so the unseen classes' logits stay up)
    done = ~np.isnan(a)
    assert (a[done] <= s[done]).all()
    assert (a[:, :-1][done[:, :-1]] < s[:, :-1][done[:, :-1]]).any(), (a, s)


def test_results_of_two_protocols_do_not_merge():
    every, seen = _run("all"), _run("seen")
    seen["seeds"] = [2, 3]
    with pytest.raises(ValueError, match="class-IL is taken over 'all' outputs in one and 'seen'"):
        report.merge_seeds(every, seen)
    del seen["class_il"]  # a results file from before the protocol was recorded: "seen"
    with pytest.raises(ValueError, match="class-IL is taken over"):
        report.merge_seeds(every, seen)


def test_the_run_setting_reaches_the_run_config():
    settings = tuned.resolve("sgd", "seq-mnist", None, {"class_il": "seen"})
    assert settings.run.run_config().class_il == "seen"
    assert tuned.resolve("sgd", "seq-mnist", None, {}).run.run_config().class_il == "all"


def test_run_config_refuses_an_unknown_protocol():
    with pytest.raises(ValueError, match="class_il must be all or seen"):
        train.RunConfig(class_il="masked")
