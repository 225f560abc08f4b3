"""Multistep learning-rate schedules inside the compiled task (issue 47 item 5)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cljax import methods, models, train, tuned
from cljax.benchmarks import scenarios, streams
from cljax.methods.common import NetState
from cljax.run import lr_schedule
from tests.conftest import tiny_scenario
from tests.test_streams import tiny_arrays

SC = tiny_scenario(num_tasks=2)


def _run(method="sgd", **config):
    m = methods.get(method).make(
        model=models.MLP((8,), SC.num_classes), input_fn=SC.input_fn, lr=0.1
    )
    run_args = {k: config.pop(k) for k in ("workdir", "stop_after", "resume") if k in config}
    cfg = train.RunConfig(batch_size=4, seeds=(0, 1), progress=False, **config)
    return train.run(m, SC, cfg, **run_args)


def _params(res):
    return jax.tree.leaves(jax.tree.map(np.asarray, res["state"].net.params))


def test_factor_is_gamma_to_the_milestones_passed():
    epochs = jnp.arange(6)
    got = jax.vmap(lambda e: lr_schedule.factor(e, (2, 4), 0.1))(epochs)
    np.testing.assert_allclose(got, [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)


def test_the_update_is_scaled_by_the_epoch_of_the_drivers_step():
    net = NetState.create(
        apply_fn=None, params={"w": jnp.ones(3)}, tx=optax.sgd(1.0), batch_stats={}
    )
    net = lr_schedule.begin(lr_schedule.attach(net, (1,), 0.5), per_epoch=3)
    grads = {"w": jnp.ones(3)}
    moved = []
    for i in range(6):  # steps 0-2: epoch 0, steps 3-5: epoch 1
        net = lr_schedule.at_step(net, i)
        before = net.params["w"][0]
        net = net.apply_gradients(grads=grads)
        moved.append(float(before - net.params["w"][0]))
    assert moved == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
    assert lr_schedule.attach(net, (1,), 0.5) is not None  # attached once: unchanged
    assert len(jax.tree.leaves(lr_schedule.attach(net, (1,), 0.5).opt_state)) == 2


def test_no_update_after_a_zero_milestone_equals_the_shorter_run():
    # gamma 0 after epoch 1: the second epoch of each task moves nothing, so two epochs are
    # one, bit for bit; the scheduler restarts each task (else task 2 would not train)
    two = _run(epochs=2, lr_milestones=(1,), lr_gamma=0.0)
    one = _run(epochs=1)
    for a, b in zip(_params(two), _params(one), strict=True):
        np.testing.assert_array_equal(a, b)
    assert two["hparams"]["lr_milestones"] == [1] and two["hparams"]["lr_gamma"] == 0.0
    assert "lr_milestones" not in one["hparams"]  # a constant rate records as before
    three = _run(epochs=2)
    assert any(not np.array_equal(a, b) for a, b in zip(_params(two), _params(three), strict=True))


def test_a_scheduled_run_stopped_mid_task_resumes_to_the_same_state(tmp_path):
    config = dict(epochs=3, lr_milestones=(1, 2), lr_gamma=0.5, chunks_per_task=4)
    straight = _run(**config)
    _run(**config, workdir=tmp_path, stop_after=(1, 1))
    resumed = _run(**config, workdir=tmp_path, resume=True)
    for a, b in zip(_params(straight), _params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_refused_where_there_are_no_epochs_or_the_host_rebuilds_the_network():
    with pytest.raises(ValueError, match="lr_milestones must be increasing epochs"):
        train.RunConfig(lr_milestones=(3, 2))
    with pytest.raises(ValueError, match="lr_gamma must be >= 0"):
        train.RunConfig(lr_milestones=(3,), lr_gamma=-1.0)
    dyn = methods.get("dyn_expand").make(  # with masks, pruned between tasks on the host
        model=models.make("cnn", SC.num_classes), input_fn=SC.input_fn
    )
    with pytest.raises(ValueError, match="rebuilds its networks on the host"):
        train.run(dyn, SC, train.RunConfig(lr_milestones=(1,), progress=False))
    stream = streams.mnist360(tiny_arrays(), scenarios.scaled_input(255.0))
    method = methods.get("sgd").make(model=models.MLP((8,), 10), input_fn=stream.input_fn)
    with pytest.raises(ValueError, match="is a stream, whose pass has no epochs"):
        train.run(method, stream, train.RunConfig(lr_milestones=(1,), progress=False))


def test_the_run_setting_parses_and_reaches_the_run_config():
    values = tuned.parse_overrides("derpp", ["lr_milestones=35,45", "lr_gamma=0.2"])
    assert values == {"lr_milestones": (35, 45), "lr_gamma": 0.2}
    settings = tuned.resolve("derpp", "seq-cifar100", 500)
    config = settings.run.run_config()
    assert config.lr_milestones == (35, 45) and config.lr_gamma == 0.1  # the X-DER protocol
