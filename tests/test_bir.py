"""Brain-Inspired Replay and the VAE pieces it is built from (`cljax/models/vae.py`): the
losses against hand computations and PyTorch's, and each of BI-R's mechanisms on a tiny
network (the decoder's class gates, the class-conditional prior, the replay's source and
targets, internal replay's frozen lower layers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods, models
from cljax.methods import TaskInfo
from cljax.methods import bir as bir_lib
from cljax.models import vae
from tests import conftest
from tests.conftest import tiny_scenario

SC = tiny_scenario()
CLASSES = [SC.classes(t) for t in range(SC.num_tasks)]


def build(**overrides):
    cfg = {**bir_lib.TEST_CONFIG, **overrides}
    return methods.get("bir").make(
        model=models.make("mlp", SC.num_classes), input_fn=SC.input_fn, **cfg
    )


def test_log_prior_of_a_class_mode_and_of_soft_labels_by_hand():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 2)).astype(np.float32)
    means = rng.normal(size=(4, 2)).astype(np.float32)
    logvars = rng.normal(size=(4, 2)).astype(np.float32) * 0.3
    y = np.array([0, 3, 1])
    probs = rng.dirichlet(np.ones(4), size=3).astype(np.float32)

    def dens(i, c):  # without the 2 pi constant, as the reference
        return np.exp(np.sum(-0.5 * (logvars[c] + (z[i] - means[c]) ** 2 / np.exp(logvars[c]))))

    got_y = vae.log_prior_gmm(z, means, logvars, y=y)
    want_y = [np.log(dens(i, y[i])) for i in range(3)]
    np.testing.assert_allclose(got_y, want_y, rtol=1e-5)
    got_p = vae.log_prior_gmm(z, means, logvars, probs=probs)
    want_p = [np.log(sum(probs[i, c] * dens(i, c) for c in range(4))) for i in range(3)]
    np.testing.assert_allclose(got_p, want_p, rtol=1e-5)
    got_u = vae.log_prior_gmm(z, means, logvars)
    want_u = [np.log(sum(dens(i, c) for c in range(4)) / 4) for i in range(3)]
    np.testing.assert_allclose(got_u, want_u, rtol=1e-5)


def test_soft_labels_outside_the_head_do_not_underflow_the_log_prior():
    """Task-IL replay: the soft labels are 0 outside the item's head. The reference sums over
    the head's modes only; a far likelier mode outside it must not underflow the sum (a
    split-mnist-task BI-R run diverged: the 1e-40 clamp is 0 in XLA, log 0, NaN gradients)."""
    z = jnp.full((1, 4), 30.0)
    means = jnp.stack([jnp.full(4, 30.0), jnp.zeros(4), jnp.ones(4)])
    logvars = jnp.zeros((3, 4))
    probs = jnp.asarray([[0.0, 0.25, 0.75]])
    got = vae.log_prior_gmm(z, means, logvars, probs=probs)
    head = vae.log_normal_diag(z[:, None], means[None, 1:], logvars[None, 1:])  # the head's
    want = jax.scipy.special.logsumexp(head, b=probs[:, 1:], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    grad = jax.jit(jax.grad(lambda z: vae.log_prior_gmm(z, means, logvars, probs=probs).sum()))
    assert np.isfinite(np.asarray(grad(z))).all()


def test_losses_match_pytorch():
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(4, 6)).astype(np.float32)
    recon = rng.uniform(size=(4, 6)).astype(np.float32)
    recon[0, 0], recon[1, 1] = 0.0, 1.0  # clamped logarithms
    want = f.binary_cross_entropy(torch.tensor(recon), torch.tensor(x), reduction="none")
    np.testing.assert_allclose(vae.recon_bce(x, recon), want.mean(1).numpy(), rtol=1e-5)
    logits = rng.normal(size=(4, 5)).astype(np.float32)
    target = rng.normal(size=(4, 5)).astype(np.float32)
    t = 2.0
    kd = -(f.softmax(torch.tensor(target) / t, 1) * f.log_softmax(torch.tensor(logits) / t, 1))
    np.testing.assert_allclose(vae.kd_loss(logits, target, t), kd.sum(1).numpy(), rtol=1e-5)
    mu, logvar = rng.normal(size=(2, 4, 3)).astype(np.float32)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(torch.tensor(mu), torch.tensor(np.exp(0.5 * logvar))),
        torch.distributions.Normal(0.0, 1.0),
    )
    np.testing.assert_allclose(vae.kl_standard(mu, logvar), kl.sum(1).numpy(), rtol=1e-5)


def test_a_class_gate_masks_the_decoder_units_of_that_class():
    """Decoding for class c does not depend on the hidden units c's mask switches off."""
    method = build(gate_prop=0.5)
    state = method.init(jax.random.key(0), SC.train(0)[0][:2])
    masks = state.masks
    assert len(masks) == vae.gated_layers(bir_lib.Config().fc_layers)
    assert all(m.shape == (SC.num_classes, bir_lib.TEST_CONFIG["fc_units"]) for m in masks)
    c = 1
    off = np.flatnonzero(np.asarray(masks[0][c]) == 0)
    on = np.flatnonzero(np.asarray(masks[0][c]) == 1)
    assert len(off) and len(on)
    parts = bir_lib.Parts(method.config, SC.input_fn, SC.num_classes, None)
    params = state.net.params
    y = jnp.full((3,), c)
    eps = jax.random.normal(jax.random.key(1), (3, method.config.z_dim))
    base = bir_lib.decode_classes(method.config, parts, state, params, y, eps)

    def perturbed(units):  # the first decoder layer's weights into `units` changed
        dense = params["vae"]["dec_0"]["dense"]
        kernel = dense["kernel"].at[:, units].add(5.0)
        new = {**params["vae"], "dec_0": {"dense": {**dense, "kernel": kernel}}}
        return bir_lib.decode_classes(method.config, parts, state, {"vae": new}, y, eps)

    np.testing.assert_array_equal(perturbed(off), base)
    assert not np.allclose(perturbed(on), base)
    # without gates every unit counts
    ungated = build(gate_prop=0.0)
    assert ungated.init(jax.random.key(0), SC.train(0)[0][:2]).masks == ()


def run_tasks(method, tasks, steps=6, key=0):
    return conftest.run_tasks(method, SC, tasks, steps, key=key)


def test_the_previous_network_replays_only_the_classes_it_has_seen():
    method = build()
    state, history = run_tasks(method, 1)
    assert np.asarray(state.seen).tolist() == [c in CLASSES[0] for c in range(SC.num_classes)]
    # the replay's source is the network as task 0 ended
    np.testing.assert_array_equal(
        jax.tree.leaves(state.prev)[0], jax.tree.leaves(history[0][0].net.params)[0]
    )
    parts = bir_lib.Parts(method.config, SC.input_fn, SC.num_classes, None)
    _, y, gate = bir_lib.generate(method.config, parts, state, state.prev, jax.random.key(3), 64)
    np.testing.assert_array_equal(gate, jax.nn.one_hot(y, SC.num_classes))  # class gates
    assert set(np.asarray(y).tolist()) == set(CLASSES[0])
    # during task 0 nothing is replayed; from task 1 on the replayed batch enters the loss
    _, history = run_tasks(method, 2)
    assert float(history[0][1]["replay_loss"]) == 0.0
    assert float(history[1][1]["replay_loss"]) > 0.0


def test_replay_off_and_hard_targets_change_the_second_task_only():
    a = run_tasks(build(), 2)[1]
    off = run_tasks(build(replay=False), 2)[1]
    hard = run_tasks(build(distill=False), 2)[1]
    for other in (off, hard):
        np.testing.assert_array_equal(other[0][1]["loss"], a[0][1]["loss"])
        assert float(other[1][1]["loss"]) != float(a[1][1]["loss"])


def test_internal_replay_replays_the_chosen_layer_and_freezes_what_is_under_it():
    method = build(replay_layer=1)
    state0 = method.init(jax.random.key(0), SC.train(0)[0][:2])
    state, history = run_tasks(method, 2)
    lower = lambda s: np.asarray(s.net.params["lower_0"]["dense"]["kernel"])  # noqa: E731
    after_first = history[0][0]
    assert not np.array_equal(lower(after_first), lower(state0))  # trained in task 0
    np.testing.assert_array_equal(lower(state), lower(after_first))  # frozen after it
    parts = bir_lib.Parts(method.config, SC.input_fn, SC.num_classes, None)
    items, _, _ = bir_lib.generate(method.config, parts, state, state.prev, jax.random.key(3), 5)
    assert items.shape == (5, method.config.fc_units)  # the layer's features, not images
    assert method.host.sample is None  # no images to draw


def test_task_gates_replay_an_earlier_task_through_its_own_mask():
    """`gates=task` (the reference's context gates): a mask per task; a replayed item's task is
    drawn from the finished ones and its class from that task's classes."""
    sc = tiny_scenario(num_tasks=3)
    classes = [sc.classes(t) for t in range(3)]
    method = methods.get("bir").make(
        model=models.make("mlp", sc.num_classes),
        input_fn=sc.input_fn,
        **{**bir_lib.TEST_CONFIG, "gates": "task", "max_tasks": 3},
    )
    state = method.init(jax.random.key(0), sc.train(0)[0][:2])
    assert all(m.shape == (3, bir_lib.TEST_CONFIG["fc_units"]) for m in state.masks)
    step = jax.jit(method.train_step)
    parts = bir_lib.Parts(method.config, sc.input_fn, sc.num_classes, None)
    for t in range(3):
        info = TaskInfo.of(t, classes)
        state = method.begin_task(state, info, jax.random.key(t))
        if t == 2:  # two tasks are finished: items of both, each through its task's mask
            _, y, gate = bir_lib.generate(
                method.config, parts, state, state.prev, jax.random.key(5), 200
            )
            task_of = np.argmax(np.asarray(gate), 1)
            assert set(task_of.tolist()) == {0, 1}
            for k in (0, 1):
                assert set(np.asarray(y)[task_of == k].tolist()) == set(classes[k])
        x, y = sc.train(t)
        for i in range(3):
            j = (np.arange(4) + 4 * i) % len(y)
            state, metrics = step(
                state, {"x": jnp.asarray(x[j]), "y": jnp.asarray(y[j])}, jax.random.key(i)
            )
        assert np.isfinite(float(metrics["loss"]))
        state = method.end_task(state, info, (x, y), jax.random.key(9))
    assert np.asarray(state.task_classes).tolist() == [
        [c in classes[t] for c in range(sc.num_classes)] for t in range(3)
    ]
    with pytest.raises(ValueError, match="max_tasks"):
        method.begin_task(state, TaskInfo.of(3, [*classes, (6,)]), jax.random.key(0))


def test_a_driver_run_checkpoints_and_resumes_every_gate_kind(tmp_path):
    """Through `train.run` with a workdir (checkpoints after each task; an empty array in the
    state cannot be saved), and a resumed run ends where an uninterrupted one does."""
    from cljax import train

    config = train.RunConfig(seeds=(0,), epochs=1, batch_size=4, progress=False)
    train.run(build(gates="class"), SC, config, workdir=tmp_path / "class")
    method = build(gates="task", max_tasks=2)
    whole = train.run(method, SC, config, workdir=tmp_path / "whole")
    train.run(method, SC, config, workdir=tmp_path / "part", stop_after=(1, 0))
    resumed = train.run(method, SC, config, workdir=tmp_path / "part", resume=True)
    np.testing.assert_array_equal(resumed["accuracy"]["class-il"], whole["accuracy"]["class-il"])
