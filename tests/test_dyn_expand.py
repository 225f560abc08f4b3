"""Dynamically Expandable Representation: herding, frozen extractors, pruning, masks, driver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods, models, train, tuned
from cljax.benchmarks import scenarios
from cljax.core import exemplars
from cljax.core import masks as masks_lib
from cljax.methods import dyn_expand as dyn
from cljax.methods.dyn_expand import prune
from cljax.models import dyn_expand as dyn_models
from tests.conftest import tiny_scenario

SC = tiny_scenario()
HP = {"buffer_size": 8, "minibatch_size": 4, "retrain_epochs": 2, "lr": 0.05}


def make(**extra):
    model = models.ConvNet((4, 8), SC.num_classes)
    return methods.get("dyn_expand").make(model=model, input_fn=SC.input_fn, **{**HP, **extra})


def herding_numpy(features, members, m):
    """iCaRL's greedy rule, written plainly."""
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    idx = np.flatnonzero(members)
    mu = f[idx].mean(0)
    chosen, total = [], np.zeros_like(mu)
    for k in range(m):
        best, best_d = None, np.inf
        for i in idx:
            if i in chosen:
                continue
            d = np.sum((mu - (total + f[i]) / (k + 1)) ** 2)
            if d < best_d:
                best, best_d = i, d
        chosen.append(best)
        total += f[best]
    return chosen


def test_herding_follows_the_greedy_rule_step_by_step():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 5)).astype(np.float32)
    members = rng.random(30) < 0.6
    got = exemplars.herding(exemplars.normalize(jnp.asarray(features)), jnp.asarray(members), 7)
    assert got.tolist() == herding_numpy(features, members, 7)


def test_memory_update_is_balanced_and_reduces_old_classes_by_rank():
    rng = np.random.default_rng(1)
    x = np.arange(40, dtype=np.uint8)[:, None]
    y = np.repeat(np.arange(4), 10).astype(np.int32)
    feats = jnp.asarray(rng.normal(size=(40, 3)), jnp.float32)
    mem = exemplars.init(12, x[0])
    mem = exemplars.update(mem, x[:20], y[:20], feats[:20], (0, 1), 6)
    assert sorted(np.asarray(mem.y[mem.valid]).tolist()) == [0] * 6 + [1] * 6
    first3 = {
        c: set(np.asarray(mem.x[mem.valid & (mem.y == c) & (mem.rank < 3)]).ravel()) for c in (0, 1)
    }
    mem = exemplars.update(mem, x[20:], y[20:], feats[20:], (2, 3), 3)
    assert sorted(np.asarray(mem.y[mem.valid]).tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for c in (0, 1):  # the old classes keep their 3 best-ranked exemplars
        assert set(np.asarray(mem.x[mem.valid & (mem.y == c)]).ravel()) == first3[c]


def test_gate_has_the_compensated_gradient():
    e = jnp.array([-2.0, 0.3, 4.0])
    s = 50.0
    value = masks_lib.gate(e, s)
    np.testing.assert_allclose(value, jax.nn.sigmoid(s * e), rtol=1e-6)
    grad = jax.grad(lambda e: jnp.sum(masks_lib.gate(e, s, scale=3.0) * jnp.arange(1.0, 4.0)))(e)
    sig = jax.nn.sigmoid(e)
    np.testing.assert_allclose(grad, 3.0 * sig * (1 - sig) * jnp.arange(1.0, 4.0), rtol=1e-5)
    assert float(masks_lib.anneal(0, 10, 400.0)) == pytest.approx(1 / 400)
    assert float(masks_lib.anneal(9, 10, 400.0)) == pytest.approx(400.0)


def batch_at(x, y, i, size=4):
    """The `i`-th batch of `size` from arrays `x`, `y`."""
    sl = slice(size * i, size * i + size)
    return {"x": jnp.asarray(x[sl]), "y": jnp.asarray(y[sl])}


def run_task(method, state, t, steps=4, key=0):
    info = train.task_info(SC, train.RunConfig(batch_size=4), t)
    state = method.begin_task(state, info, jax.random.key(100 + t))
    x, y = SC.train(t)
    step = jax.jit(method.train_step)
    for i in range(steps):
        state, metrics = step(state, batch_at(x, y, i), jax.random.key(key + i))
        assert np.isfinite(float(metrics["loss"]))
    state = jax.jit(method.end_task, static_argnums=1)(
        state, info, (jnp.asarray(x), jnp.asarray(y)), jax.random.key(7)
    )
    return state, info


def test_sparsity_term_switches_channels_off():
    def channels_on(sparsity):
        method = make(sparsity=sparsity)
        state = method.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
        state, _ = run_task(method, state, 0, steps=6)
        return sum(int((np.asarray(e) > 0).sum()) for e in state.net.params["emb"])

    assert channels_on(0.0) > channels_on(1.0)


def test_pruned_network_equals_masked_network_and_old_extractors_stay_frozen():
    method = make(sparsity=0.0)
    state = method.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
    state, info = run_task(method, state, 0)
    # Switch off every other channel (as a trained sparse mask would) so pruning has work.
    emb = tuple(e.at[::2].set(-1.0) for e in state.net.params["emb"])
    state = state.replace(net=state.net.replace(params={**state.net.params, "emb": emb}))
    x_test = jnp.asarray(SC.test(0)[0])
    masked = method.predict(state, x_test)
    before = method.host.describe(state)
    on = [int((np.asarray(e) > 0).sum()) for e in state.net.params["emb"]]
    unpruned = jax.tree.map(np.asarray, state.net.params["new"])
    state = method.host.resize(state, info)
    after = method.host.describe(state)
    np.testing.assert_allclose(method.predict(state, x_test), masked, rtol=1e-5, atol=1e-5)
    assert after["new_extractor_params"] < before["new_extractor_params"]
    assert after["new_extractor_channels"] == [max(1, c) for c in on]

    frozen = jax.tree.map(np.asarray, state.net.params["new"])
    info1 = train.task_info(SC, train.RunConfig(batch_size=4), 1)
    started = method.begin_task(state, info1, jax.random.key(3)).net.params["new"]
    jax.tree.map(np.testing.assert_array_equal, started, unpruned)  # the next one starts unpruned
    state, info = run_task(method, state, 1)
    assert len(state.old) == 1
    jax.tree.map(np.testing.assert_array_equal, state.old[0]["params"], frozen)
    # the classifier grew by the new extractor's feature width
    width = frozen["conv1"]["kernel"].shape[-1]
    assert state.net.params["fc"]["kernel"].shape[0] == width + 8
    assert method.host.describe(state)["extractors"] == 2


def test_a_layer_pruned_to_nothing_leaves_the_frozen_features_unchanged():
    """A layer whose mask is all off keeps one channel (the network stays connected); its
    frozen copy, applied without masks from the next task on, must still give the
    features the masked network gave."""
    method = make(sparsity=0.0)
    state = method.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
    state, info = run_task(method, state, 0)
    emb = (-jnp.ones_like(state.net.params["emb"][0]), *state.net.params["emb"][1:])
    state = state.replace(net=state.net.replace(params={**state.net.params, "emb": emb}))
    base = models.ConvNet((4, 8), None)
    x = SC.input_fn(jnp.asarray(SC.test(0)[0]), None, False)
    stats = state.net.batch_stats["new"]
    masked = dyn_models.super_features(base, state.net.params, stats, (), x, masks=True)
    state = method.host.resize(state, info)
    assert [int(np.shape(e)[0]) for e in state.net.params["emb"]][0] == 1
    info1 = train.task_info(SC, train.RunConfig(batch_size=4), 1)
    state = method.begin_task(state, info1, jax.random.key(3))
    np.testing.assert_allclose(dyn_models.old_features(base, state.old, x)[0], masked, atol=1e-6)


def test_lr_schedule_is_the_official_warmup_then_milestones():
    f = lambda e, *a: float(prune.lr_factor(jnp.asarray(e), *a))  # noqa: E731
    # GradualWarmupScheduler(multiplier=1, 10 epochs) chained to MultiStepLR([100, 120], 0.1)
    got = [f(e, 10, (100, 120), 0.1) for e in (0, 4, 9, 10, 109, 110, 129, 130, 169)]
    assert got == pytest.approx([0.1, 0.5, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    assert [f(e, 0, (15,), 0.1) for e in (0, 14, 15, 29)] == pytest.approx([1, 1, 0.1, 0.1])

    plain, warm = make(), make(warmup_epochs=2)
    info = train.task_info(SC, train.RunConfig(batch_size=4), 0)
    state = plain.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
    state = plain.begin_task(state, info, jax.random.key(1)).replace(steps_per_epoch=jnp.asarray(1))
    x, y = SC.train(0)
    p0 = state.net.params
    p_plain = plain.train_step(state, batch_at(x, y, 0), jax.random.key(2))[0].net.params
    s_warm = warm.train_step(state, batch_at(x, y, 0), jax.random.key(2))[0]
    # epoch 0 of a 2-epoch warm-up: the same SGD step at half the learning rate
    delta = lambda p: jax.tree.map(lambda a, b: a - b, p["new"], p0["new"])  # noqa: E731
    jax.tree.map(
        lambda w, q: np.testing.assert_allclose(w, 0.5 * q, rtol=1e-4, atol=1e-7),
        delta(s_warm.net.params),
        delta(p_plain),
    )
    # the heads are re-initialised (PyTorch's Linear reset) when the warm-up ends, as in the
    # official code
    after = warm.train_step(s_warm, batch_at(x, y, 1), jax.random.key(3))[0].net.params
    for head in ("fc", "aux"):
        kernel = np.asarray(after[head]["kernel"])
        assert not np.allclose(kernel, s_warm.net.params[head]["kernel"])
        assert np.abs(kernel).max() <= 1 / np.sqrt(kernel.shape[0])
    # B50's first task has its own schedule (the official "pretraining"): no warm-up, and
    # x0.1 from epoch 1 here; the other tasks keep the warm-up
    first = make(warmup_epochs=2, first_milestones=(1,))
    p_first = first.train_step(state, batch_at(x, y, 0), jax.random.key(2))[0].net.params
    at_1 = state.replace(net=state.net.replace(step=jnp.asarray(1)))
    p_first1 = first.train_step(at_1, batch_at(x, y, 0), jax.random.key(2))[0].net.params
    for got, scale in ((p_first, 1.0), (p_first1, 0.1)):
        jax.tree.map(
            lambda w, q, c=scale: np.testing.assert_allclose(w, c * q, rtol=1e-4, atol=1e-7),
            delta(got),
            delta(p_plain),
        )


@pytest.mark.parametrize("bad", [(True,), (0, 5), [1.5], 100])
@pytest.mark.parametrize("name", ["milestones", "first_milestones", "retrain_milestones"])
def test_milestones_must_be_positive_epochs(name, bad):
    with pytest.raises(ValueError, match=f"dyn_expand {name} must be a tuple of integers > 0"):
        make(**{name: bad})


def test_config_bounds_and_sorted_milestones():
    config = dyn.Config(milestones=(120, 100), retrain_milestones=[30, 15])
    assert (config.milestones, config.retrain_milestones) == ((100, 120), (15, 30))
    assert make(milestones=(120, 100)).hparams["milestones"] == (100, 120)
    for key, bad, message in [
        ("buffer_size", 0, "buffer_size must be >= 1"),
        ("minibatch_size", 0, "minibatch_size must be >= 1"),
        ("per_class", -1, "per_class must be >= 0"),
        ("per_class", 2.5, "per_class must be an int"),
        ("warmup_epochs", -1, "warmup_epochs must be >= 0"),
        ("masks", "yes", "masks must be a bool"),
    ]:
        with pytest.raises(ValueError, match=message):
            make(**{key: bad})
    with pytest.raises(ValueError, match="s_max must be > 0 with masks=True"):
        make(s_max=0.0)
    mlp = models.MLP((8,), SC.num_classes)
    dyn.make(model=mlp, input_fn=SC.input_fn, s_max=0.0, masks=False)  # unused then
    with pytest.raises(ValueError, match="has no setting nope"):
        make(nope=1)


def test_masks_need_the_cnn_backbone():
    with pytest.raises(ValueError, match="masks=false"):
        methods.get("dyn_expand").make(model=models.MLP((8,), 4), input_fn=SC.input_fn)
    no_masks = methods.get("dyn_expand").make(
        model=models.MLP((8,), 4), input_fn=SC.input_fn, masks=False, **HP
    )
    assert no_masks.host.resize is None  # no pruning: seeds run together under vmap
    assert no_masks.host.describe is not None


def test_driver_runs_seeds_one_by_one_and_resumes_into_pruned_shapes(tmp_path):
    method = make()
    config = train.RunConfig(epochs=1, batch_size=4, seeds=(0, 1), progress=False)
    seeds_in = lambda t, state: [t] * len(jax.tree.leaves(state)[0])  # noqa: E731
    full = train.run(method, SC, config, after_task=seeds_in)
    assert len(full["per_task"]) == SC.num_tasks and len(full["per_task"][0]) == 2
    assert full["after_task"] == [[t, t] for t in range(SC.num_tasks)]  # one seed per call
    # seed 1 alone, stopped within task 2 (the first extractor pruned, a second one added)
    # and resumed into those shapes: as in the run that never stopped
    one = train.RunConfig(epochs=1, batch_size=4, seeds=(1,), progress=False)
    train.run(method, SC, one, workdir=tmp_path, stop_after=(1, 0))
    resumed = train.run(method, SC, one, workdir=tmp_path, resume=True)
    np.testing.assert_allclose(
        np.asarray(resumed["accuracy"]["class-il"], float)[0],
        np.asarray(full["accuracy"]["class-il"], float)[1],
        atol=1e-6,
    )
    assert [row[0] for row in resumed["per_task"]] == [row[1] for row in full["per_task"]]


def test_official_cifar100_configs_b0_and_b50():
    """The official recipes resolve as the CLI resolves them (`--base-classes 50` for B50)."""
    names = {b: scenarios.benchmark_name("seq-cifar100", b) for b in (0, 50)}
    assert names == {0: "seq-cifar100", 50: "seq-cifar100-b50"}
    b0, b50 = (tuned.resolve("dyn_expand", name, 2000) for name in names.values())
    assert (b0.run.n_epochs, b0.run.first_epochs, b0.config.per_class) == (170, None, 0)
    for recipe in (b0, b50):  # the official transforms and class order
        assert (recipe.run.class_order, recipe.run.brightness) == ("der", 63 / 255)
    assert (b50.run.n_epochs, b50.run.first_epochs, b50.config.per_class) == (170, 200, 20)
    assert b50.config.first_milestones == (60, 120, 160) and b50.config.milestones == (100, 120)
    assert (b50.config.retrain_epochs, b50.config.retrain_lr, b50.config.retrain_milestones) == (
        50,
        0.05,
        (15, 30),
    )
    model = models.make("resnet18", 100)
    method = methods.get("dyn_expand").make(b50.config, model=model, input_fn=SC.input_fn)
    assert method.config is b50.config
    assert method.hparams["first_milestones"] == (60, 120, 160)
    assert method.hparams == b50.config.to_dict()


def test_head_inits_are_the_official_codes():
    """kaiming: nn.init.kaiming_normal_(nonlinearity="linear"), N(0, 1/d_in), not truncated;
    torch: nn.Linear.reset_parameters, U(-1/sqrt(d_in), 1/sqrt(d_in)); neither has a bias."""
    d_in = 400
    normal = dyn_models.head_init("kaiming", jax.random.key(0), d_in, 300)
    uniform = dyn_models.head_init("torch", jax.random.key(0), d_in, 300)
    assert set(normal) == set(uniform) == {"kernel"}
    w, u = np.asarray(normal["kernel"]), np.asarray(uniform["kernel"])
    assert abs(w.std() * np.sqrt(d_in) - 1) < 0.02 and abs(w.mean()) < 0.002
    assert np.abs(w).max() * np.sqrt(d_in) > 3  # a truncated normal stops at 2 std
    assert np.abs(u).max() <= 1 / np.sqrt(d_in) < np.abs(u).max() * 1.01
    assert abs(u.std() * np.sqrt(3 * d_in) - 1) < 0.02
    assert set(dyn_models.head_init("lecun", jax.random.key(0), 4, 3)) == {"kernel", "bias"}


def test_a_new_task_starts_a_new_classifier_unless_reused():
    """The official reuse_oldfc False: at a new task a new Kaiming-normal classifier without
    bias over the whole super feature; `classifier=reused` keeps the old rows and bias."""
    x0 = jnp.asarray(SC.train(0)[0][:1])
    info1 = train.task_info(SC, train.RunConfig(batch_size=4), 1)
    for kind in ("official", "reused"):
        method = make(classifier=kind, masks=False, retrain_epochs=0)
        info0 = train.task_info(SC, train.RunConfig(batch_size=4), 0)
        state = method.begin_task(method.init(jax.random.key(0), x0), info0, jax.random.key(1))
        old = jax.tree.map(np.asarray, state.net.params["fc"])
        new = method.begin_task(state, info1, jax.random.key(3)).net.params["fc"]
        d = old["kernel"].shape[0]
        assert new["kernel"].shape == (2 * d, SC.num_classes)
        if kind == "official":
            assert "bias" not in old and "bias" not in new
            assert not np.allclose(new["kernel"][:d], old["kernel"])
        else:
            np.testing.assert_array_equal(new["kernel"][:d], old["kernel"])
            np.testing.assert_array_equal(new["bias"], old["bias"])


def test_retraining_pool_is_the_official_balanced_subset():
    """The task's data and the old memory, every class cut to the old classes' k exemplars,
    the new classes' k drawn at random without repeats."""
    method = make()
    config, parts = method.init.args
    x_0, y_0 = (jnp.asarray(a) for a in SC.train(0))
    state = method.init(jax.random.key(0), x_0[:1])
    feats = jax.random.normal(jax.random.key(1), (len(y_0), 5))  # herding on any features
    memory = exemplars.update(state.memory, x_0, y_0, feats, SC.classes(0), 4)
    state = state.replace(memory=memory)
    info1 = train.task_info(SC, train.RunConfig(batch_size=4), 1)
    x, y = (jnp.asarray(a) for a in SC.train(1))
    k = HP["buffer_size"] // len(SC.classes(0))
    draws = []
    for key in (1, 2):
        px, py, pw = dyn.balanced_pool(config, parts, state, x, y, info1, jax.random.key(key))
        px, py, pw = np.asarray(px), np.asarray(py), np.asarray(pw)
        counts = {int(c): int(pw[py == c].sum()) for c in np.unique(py[pw > 0])}
        assert counts == {c: k for c in (*SC.classes(0), *SC.classes(1))}
        new = px[HP["buffer_size"] :]
        rows = {tuple(r.ravel()) for r in new}
        assert len(rows) == len(new) == k * len(SC.classes(1))  # no repeats
        xs = {tuple(r.ravel()): int(c) for r, c in zip(np.asarray(x), np.asarray(y), strict=True)}
        assert all(
            xs[tuple(r.ravel())] == c for r, c in zip(new, py[HP["buffer_size"] :], strict=True)
        )
        np.testing.assert_array_equal(px[: HP["buffer_size"]], state.memory.x)
        draws.append(rows)
    assert draws[0] != draws[1]


def test_retraining_epoch_visits_each_valid_item_once_in_order_then_pads():
    weights = jnp.asarray([1, 0, 1, 1, 1, 0, 1], jnp.float32)
    idx, pos = prune.epoch_order(jax.random.key(0), weights, 3)
    assert idx.shape == pos.shape == (3, 3)
    flat, live = np.asarray(idx).ravel(), np.asarray(pos).ravel() > 0
    assert sorted(flat[:5]) == [0, 2, 3, 4, 6]  # the valid items first, each once
    assert sorted(flat[5:7]) == [1, 5] and not live[7:].any() and live[:7].all()
    other = np.asarray(prune.epoch_order(jax.random.key(1), weights, 3)[0]).ravel()
    assert list(other[:5]) != list(flat[:5])


def test_retraining_sees_augmented_batches_only_when_balanced():
    """The official re-training draws training-augmented batches every epoch; the old
    variant (`retrain_data=memory`) computes the memory's features once, unaugmented."""
    flags = {}
    for data in ("balanced", "memory"):
        seen = []

        def input_fn(x, key, train, seen=seen):
            seen.append(train)
            return SC.input_fn(x, key, train)

        model = models.ConvNet((4, 8), SC.num_classes)
        method = dyn.make(model=model, input_fn=input_fn, **{**HP, "retrain_data": data})
        x0 = jnp.asarray(SC.train(0)[0][:1])
        state, _ = run_task(method, method.init(jax.random.key(0), x0), 0, steps=1)
        info1 = train.task_info(SC, train.RunConfig(batch_size=4), 1)
        state = method.begin_task(state, info1, jax.random.key(3))
        x, y = (jnp.asarray(a) for a in SC.train(1))
        seen.clear()
        jax.eval_shape(
            lambda s, d, k, m=method, i=info1: m.end_task(s, i, d, k),
            state,
            (x, y),
            jax.random.key(7),
        )
        flags[data] = set(seen)
    assert flags == {"balanced": {True, False}, "memory": {False}}
