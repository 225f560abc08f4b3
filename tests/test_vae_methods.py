"""The generative classifier (`gen_classifier`) and DGR with a VAE generator (`dgr_vae`): the
likelihood estimate by hand on a tiny VAE, each class's VAE learning from its own items only,
and the VAE scholar's replay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cljax import methods, models
from cljax.methods import dgr_vae as dgr_lib
from cljax.methods import gen_classifier as gc_lib
from cljax.models import vae
from tests.conftest import run_tasks, tiny_scenario

SC = tiny_scenario()
CLASSES = [SC.classes(t) for t in range(SC.num_tasks)]


def build(name, **overrides):
    module = methods.get(name)
    return module.make(
        model=models.make("mlp", SC.num_classes),
        input_fn=SC.input_fn,
        **{**module.TEST_CONFIG, **overrides},
    )


def test_likelihood_estimate_by_hand_on_a_tiny_vae():
    """log mean_s exp(log N(x; dec(z_s), I) + log N(z_s; 0, I) - log N(z_s; mu, sigma^2)) with
    z_s = mu + sigma eps_s, each log-density without 2 pi, computed here in numpy from the
    VAE's own weights; S = 0 uses z = mu and log q = -1/2 sum logvar."""
    net = vae.CondVAE(in_features=3, fc_units=4, fc_layers=2, z_dim=2)
    x = np.array([[0.2, 0.9, 0.5], [1.0, 0.0, 0.3]], np.float32)
    params = net.init(jax.random.key(0), x, jnp.zeros((2, 2)))["params"]
    p = jax.tree.map(np.asarray, params)

    def dense(name, h):
        d = p[name]["dense"]
        return h @ d["kernel"] + d.get("bias", 0.0)

    h = np.maximum(dense("enc_0", x), 0)
    mu, logvar = dense("to_mu", h), dense("to_logvar", h)

    def decode(z):
        return 1 / (1 + np.exp(-dense("dec_1", np.maximum(dense("dec_0", z), 0))))

    eps = np.random.default_rng(0).normal(size=(4, 2, 2)).astype(np.float32)
    lls = []
    for e in eps:
        z = mu + np.exp(0.5 * logvar) * e
        log_px = np.sum(-0.5 * (x - decode(z)) ** 2, 1)
        log_pz = np.sum(-0.5 * z**2, 1)
        log_q = np.sum(-0.5 * (logvar + (z - mu) ** 2 / np.exp(logvar)), 1)
        lls.append(log_px + log_pz - log_q)
    lls = np.stack(lls)
    want = np.log(np.mean(np.exp(lls - lls.max(0)), 0)) + lls.max(0)
    got = gc_lib.log_likelihood(net, params, jnp.asarray(x), jnp.asarray(eps))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    mean_want = (
        np.sum(-0.5 * (x - decode(mu)) ** 2, 1) + np.sum(-0.5 * mu**2, 1) + np.sum(0.5 * logvar, 1)
    )
    got_mean = gc_lib.log_likelihood(net, params, jnp.asarray(x), jnp.zeros((0, 2, 2)))
    np.testing.assert_allclose(got_mean, mean_want, rtol=1e-5, atol=1e-5)


def test_each_class_vae_learns_from_its_own_items_only():
    method = build("gen_classifier")
    state = method.init(jax.random.key(0), SC.train(0)[0][:2])
    x, y = SC.train(0)
    only = np.flatnonzero(y == CLASSES[0][0])[:4]  # items of the task's first class only
    new, metrics = jax.jit(method.train_step)(
        state, {"x": jnp.asarray(x[only]), "y": jnp.asarray(y[only])}, jax.random.key(1)
    )
    assert np.isfinite(float(metrics["loss"]))
    for c in range(SC.num_classes):
        same = [
            np.array_equal(a[c], b[c])
            for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state), strict=True)
        ]
        if c == CLASSES[0][0]:
            assert not all(same)  # its parameters and Adam's moments moved
        else:
            assert all(same)  # untouched, Adam's count included
    scores = method.predict(new, x[:5])
    assert scores.shape == (5, SC.num_classes)
    np.testing.assert_array_equal(scores, method.predict(new, x[:5]))  # deterministic


def test_the_generative_classifier_learns_the_tiny_classes():
    method = build("gen_classifier", fc_units=16, z_dim=2, lr=0.03)
    state = method.init(jax.random.key(0), SC.train(0)[0][:2])
    step = jax.jit(method.train_step)
    for t in range(SC.num_tasks):
        x, y = SC.train(t)
        for i in range(100):
            j = (np.arange(8) + 8 * i) % len(y)
            state, _ = step(
                state, {"x": jnp.asarray(x[j]), "y": jnp.asarray(y[j])}, jax.random.key(i)
            )
    x, y = (np.concatenate(a) for a in zip(*(SC.test(t) for t in range(SC.num_tasks)), strict=True))
    accuracy = float(np.mean(np.argmax(method.predict(state, x), 1) == y))
    assert accuracy > 0.9, accuracy  # chance is 0.25


def test_dgr_vae_replays_the_previous_scholar_labelled_over_every_output():
    method = build("dgr_vae")
    state, history = run_tasks(method, SC, steps=5)
    for a, b in zip(
        jax.tree.leaves(state.prev_gen), jax.tree.leaves(state.gen.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    after_first = history[0][0]
    parts = dgr_lib.Parts(
        method.config, models.make("mlp", SC.num_classes), SC.input_fn, None, None
    )
    items = dgr_lib.generate(parts, after_first, after_first.gen.params, jax.random.key(1), 6)
    assert items.shape == (6, int(np.prod(SC.train(0)[0].shape[1:])))
    assert float(items.min()) >= 0.0 and float(items.max()) <= 1.0  # sigmoid images
    # without replay the second task trains on its own data only: another loss
    _, off = run_tasks(build("dgr_vae", replay=False), SC, steps=5)
    np.testing.assert_array_equal(off[0][1]["loss"], history[0][1]["loss"])
    assert float(off[1][1]["loss"]) != float(history[1][1]["loss"])


def test_fine_tuning_with_adam_is_van_de_vens_none():
    """`sgd` / `joint` with `optimizer=adam`: one step is Adam's (betas 0.9, 0.999) on the
    batch's cross-entropy; the default stays plain SGD."""
    import optax

    from cljax.methods.common import cross_entropy

    x, y = SC.train(0)
    batch = {"x": jnp.asarray(x[:4]), "y": jnp.asarray(y[:4])}
    for name in ("sgd", "joint"):
        method = methods.get(name).make(
            model=models.make("mlp", SC.num_classes),
            input_fn=SC.input_fn,
            optimizer="adam",
            lr=0.01,
        )
        state = method.init(jax.random.key(0), x[:2])
        new, _ = method.train_step(state, batch, jax.random.key(1))
        params = state.net.params

        def loss(p, apply=state.net.apply_fn):
            logits = apply({"params": p}, SC.input_fn(batch["x"], None, True))
            return cross_entropy(logits, batch["y"]).mean()

        tx = optax.adam(0.01, b1=0.9, b2=0.999, eps=1e-8)
        updates, _ = tx.update(jax.grad(loss)(params), tx.init(params), params)
        want = optax.apply_updates(params, updates)
        for a, b in zip(jax.tree.leaves(new.net.params), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert methods.get("sgd").Config().optimizer == "sgd"


def _head_of(name, state):
    """The output layer's (kernel, bias) of a method's classifier."""
    if name == "bir":
        dense = state.net.params["vae"]["head"]["dense"]
    else:
        net = state.solver if name == "dgr_vae" else state.net
        dense = net.params[max(net.params)]  # Dense_0 < Dense_1 < Dense_2: the output layer
    return np.asarray(dense["kernel"]), np.asarray(dense["bias"])


def test_task_heads_train_each_item_on_its_own_tasks_classes_only():
    """`task_heads=2` (van de Ven's task-IL training): after two tasks of three the output
    units of the third task's classes are exactly as initialised, for every method that has
    the setting; trained on every output (the default), the new items' cross-entropy pushes
    them down."""
    sc = tiny_scenario(num_tasks=3)
    unseen = [4, 5]
    for name in ("sgd", "joint", "dgr_vae", "bir"):
        module = methods.get(name)
        extra = {"optimizer": "adam", "lr": 0.01} if name in ("sgd", "joint") else {}
        cfg = {**getattr(module, "TEST_CONFIG", {}), **extra}
        for heads in (2, 0):
            method = module.make(
                model=models.make("mlp", sc.num_classes),
                input_fn=sc.input_fn,
                **{**cfg, "task_heads": heads},
            )
            init = method.init(jax.random.key(0), sc.train(0)[0][:2])
            state, history = run_tasks(method, sc, tasks=2, steps=4)
            assert np.isfinite(float(history[-1][1]["loss"])), name
            (k0, b0), (k1, b1) = _head_of(name, init), _head_of(name, state)
            same = np.array_equal(k0[:, unseen], k1[:, unseen]) and np.array_equal(
                b0[unseen], b1[unseen]
            )
            assert same == (heads == 2), (name, heads)
