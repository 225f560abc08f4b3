"""MER: the Reptile update against a hand-unrolled step of a two-parameter model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax.methods import mer

X = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]])  # (batch_num, items)
Y = np.array([[2.0, 0.0, 1.0], [-1.0, 4.0, 2.0]])
W = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])  # one padded item in the first batch
LR, BETA, GAMMA = 0.1, 0.5, 0.3


def grad_by_hand(a, b, xs, ys, ws):
    """Gradient of the weighted mean of (a x + b - y)^2."""
    r = a * xs + b - ys
    n = max(ws.sum(), 1.0)
    return (2 * r * xs * ws).sum() / n, (2 * r * ws).sum() / n


def grad_fn(params, items):
    def loss(p):
        r = p["a"] * items["x"] + p["b"] - items["y"]
        return jnp.sum(r**2 * items["w"]) / jnp.maximum(jnp.sum(items["w"]), 1.0)

    return jax.grad(loss)(params)


@pytest.mark.parametrize("inner", ["sample", "batch"])
def test_reptile_update_equals_the_hand_unrolled_step(inner):
    a, b = 0.3, -0.2
    a0, b0 = a, b
    for k in range(2):
        wa, wb = a, b
        if inner == "batch":
            ga, gb = grad_by_hand(a, b, X[k], Y[k], W[k])
            a, b = a - LR * ga, b - LR * gb
        else:
            for i in range(3):
                if W[k, i]:
                    ga, gb = grad_by_hand(a, b, X[k, i : i + 1], Y[k, i : i + 1], W[k, i : i + 1])
                    a, b = a - LR * ga, b - LR * gb
        a, b = wa + BETA * (a - wa), wb + BETA * (b - wb)
    a, b = a0 + GAMMA * (a - a0), b0 + GAMMA * (b - b0)
    batches = {"x": jnp.asarray(X), "y": jnp.asarray(Y), "w": jnp.asarray(W)}
    params = {"a": jnp.asarray(a0), "b": jnp.asarray(b0)}
    got = jax.jit(mer.reptile, static_argnums=(2, 3, 4, 5, 6))(
        params, batches, grad_fn, LR, BETA, GAMMA, inner
    )
    np.testing.assert_allclose([float(got["a"]), float(got["b"])], [a, b], rtol=1e-5)


def test_with_beta_and_gamma_one_batch_mode_is_one_sgd_step_on_the_mixed_batch():
    params = {"a": jnp.asarray(0.3), "b": jnp.asarray(-0.2)}
    batches = {k: jnp.asarray(v[:1]) for k, v in (("x", X), ("y", Y), ("w", W))}
    got = mer.reptile(params, batches, grad_fn, LR, 1.0, 1.0, "batch")
    ga, gb = grad_by_hand(0.3, -0.2, X[0], Y[0], W[0])
    np.testing.assert_allclose(
        [float(got["a"]), float(got["b"])], [0.3 - LR * ga, -0.2 - LR * gb], rtol=1e-5
    )
