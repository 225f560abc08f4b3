"""Dynamic Generative Memory: frozen past generation, sparsity, growth."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods, models, train
from cljax.core import masks as masks_lib
from tests.conftest import tiny_scenario

SC = tiny_scenario()


@functools.cache
def make(variant, lamb_g=-1.0, g_lr=2e-2):
    return methods.get("dgm").make(
        model=models.MLP((8,), SC.num_classes),
        input_fn=SC.input_fn,
        variant=variant,
        n_critic=2,
        z_dim=8,
        hidden=8,
        lamb_g=lamb_g,
        g_lr=g_lr,
    )


def run_task(method, state, t, steps=6):
    info = train.task_info(SC, train.RunConfig(batch_size=8), t)
    state = jax.jit(method.begin_task, static_argnums=1)(state, info, jax.random.key(50 + t))
    x, y = SC.train(t)
    step = jax.jit(method.train_step)
    for i in range(steps):
        sl = slice((8 * i) % 16, (8 * i) % 16 + 8)
        state, m = step(
            state, {"x": jnp.asarray(x[sl]), "y": jnp.asarray(y[sl])}, jax.random.key(i)
        )
        assert all(np.isfinite(float(v)) for v in m.values())
    state = method.end_task(state, info, (x, y), jax.random.key(9))
    return state, info


@pytest.mark.parametrize("variant", ["dgmw", "dgma"])
def test_past_classes_are_generated_exactly_as_before(variant):
    method = make(variant)
    state = method.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
    state, info = run_task(method, state, 0)
    before = method.host.describe(state)
    state = method.host.resize(state, info)
    after = method.host.describe(state)
    # growth adds exactly the units it reports
    grown = before["last_task_reserved_units"]
    assert after["hidden_units"] == [
        w + g for w, g in zip(before["hidden_units"], grown, strict=True)
    ]
    images0, labels = method.host.sample(state, jax.random.key(3), per_class=4)
    state, info = run_task(method, state, 1)
    # per iteration, as the official code: one solver step per task seen, then the critic's 2
    assert int(state.disc.step) == 6 * (2 + 2)
    images1, _ = method.host.sample(state, jax.random.key(3), per_class=4)
    old = np.isin(np.asarray(labels), SC.classes(0))
    np.testing.assert_allclose(images1[old], images0[old], atol=1e-5)
    assert not np.allclose(images1[~old], images0[~old])  # the new task did learn


def test_growth_equals_newly_used_units_for_dgma():
    method = make("dgma")
    state = method.init(jax.random.key(1), jnp.asarray(SC.train(0)[0][:1]))
    state, info = run_task(method, state, 0)
    newly = [int((np.asarray(e[0]) > 0).sum()) for e in state.bank]  # nothing used before task 0
    assert np.asarray(state.grown).tolist() == newly


def test_sparsity_term_reduces_the_units_a_task_takes():
    used = {}
    for lamb in (0.0, 50.0):
        method = make("dgma", lamb_g=lamb, g_lr=0.2)
        state = method.init(jax.random.key(2), jnp.asarray(SC.train(0)[0][:1]))
        state, _ = run_task(method, state, 0, steps=8)
        used[lamb] = method.host.describe(state)["used_fraction"]
    assert used[50.0] < used[0.0]


def test_bad_variant_is_clear():
    with pytest.raises(ValueError, match="dgmw"):
        methods.get("dgm").make(model=models.MLP(), input_fn=SC.input_fn, variant="hat")


@pytest.mark.parametrize("e", [-0.8, -0.004, 0.0005, 0.0055, 0.3])
def test_mask_gradient_is_the_official_clamped_compensation(e):
    """DGM's mask gradient is the official code's (HAT's), as it computes it in float32:
    y (1 - y) * s_max * [cosh(clip(s e, +-50)) + 1] / [cosh(e) + 1], y = sigmoid(s e).
    It moves while |s e| is small (s e = -40, 5 at s = 1e4) and is zero once the mask
    has saturated (s e = -8000, 55, 3000): the mask locks."""
    s, s_max = np.float32(1e4), np.float32(2e4)
    got = jax.grad(lambda v: masks_lib.gate(v, s, s_max, clamp=50.0))(jnp.float32(e))
    se = s * np.float32(e)
    with np.errstate(over="ignore"):
        y = np.float32(1) / (np.float32(1) + np.exp(-se))
    num = np.cosh(np.clip(se, np.float32(-50), np.float32(50))) + np.float32(1)
    official = y * (np.float32(1) - y) * s_max * num / (np.cosh(np.float32(e)) + np.float32(1))
    np.testing.assert_allclose(float(got), float(official), rtol=1e-4, atol=1e-30)
    assert (float(got) > 1.0) if abs(se) <= 40 else (float(got) == 0.0)
