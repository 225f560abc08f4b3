"""Online EWC and SI: their Fisher, importance and penalties against hand computations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods
from cljax.methods import TaskInfo

INFO = TaskInfo(0, (0, 1), (0, 1))


class TwoParams(nn.Module):
    """Logits `[z, -z]` with `z = w * x_0 + b`: two parameters, two classes."""

    @nn.compact
    def __call__(self, x, train=False):
        del train
        w = self.param("w", lambda k: jnp.asarray(0.7))
        b = self.param("b", lambda k: jnp.asarray(-0.2))
        z = w * x.reshape(x.shape[0], -1)[:, 0] + b
        return jnp.stack([z, -z], -1)


def identity(x, key, train):
    del key, train
    return x.astype(jnp.float32)


X = np.asarray([[0.5], [-1.0], [2.0], [1.5], [-0.3]], np.float32)
Y = np.asarray([0, 1, 0, 1, 1], np.int32)


def hand_fisher(w, b):
    """Mammoth's Fisher by hand: log p(y=0) = z - log(e^z + e^-z), d/dz = 1 - tanh z;
    log p(y=1): d/dz = -1 - tanh z; dz/dw = x, dz/db = 1; weighted by p(y | x)."""
    z = w * X[:, 0] + b
    p0 = np.exp(z) / (np.exp(z) + np.exp(-z))
    p = np.where(Y == 0, p0, 1 - p0)
    dz = np.where(Y == 0, 1 - np.tanh(z), -1 - np.tanh(z))
    return {"w": np.mean(p * (dz * X[:, 0]) ** 2), "b": np.mean(p * dz**2)}


def ewc(**kw):
    return methods.get("ewc_on").make(model=TwoParams(), input_fn=identity, **kw)


def test_ewc_fisher_penalty_and_online_decay_by_hand():
    method = ewc(lr=0.1, e_lambda=3.0, gamma=0.5, fisher_chunk=2)  # 5 items: a padded chunk
    state = method.init(jax.random.key(0), X[:1])
    state = method.end_task(state, INFO, (jnp.asarray(X), jnp.asarray(Y)), jax.random.key(1))
    f1 = hand_fisher(0.7, -0.2)
    one_by_one = ewc(fisher_chunk=1).end_task(
        method.init(jax.random.key(0), X[:1]),
        INFO,
        (jnp.asarray(X), jnp.asarray(Y)),
        jax.random.key(1),
    )
    for k in ("w", "b"):
        np.testing.assert_allclose(one_by_one.fisher[k], f1[k], rtol=1e-5)
    for k in ("w", "b"):
        np.testing.assert_allclose(state.fisher[k], f1[k], rtol=1e-5)
        np.testing.assert_allclose(state.anchor[k], state.net.params[k])
    # a step: the CE gradient plus 2 lambda F (theta - theta*), theta* the anchor
    moved = state.replace(
        net=state.net.replace(params={"w": jnp.asarray(1.0), "b": jnp.asarray(0.1)})
    )
    batch = {"x": jnp.asarray(X[:2]), "y": jnp.asarray(Y[:2])}
    after, metrics = jax.jit(method.train_step)(moved, batch, jax.random.key(2))

    def ce(params):
        z = params["w"] * X[:2, 0] + params["b"]
        logits = jnp.stack([z, -z], -1)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), Y[:2]])

    g = jax.grad(ce)({"w": 1.0, "b": 0.1})
    for k, value, anchor in (("w", 1.0, 0.7), ("b", 0.1, -0.2)):
        expected = value - 0.1 * (g[k] + 2 * 3.0 * f1[k] * (value - anchor))
        np.testing.assert_allclose(after.net.params[k], expected, rtol=1e-5)
    assert float(metrics["loss"]) == pytest.approx(float(ce({"w": 1.0, "b": 0.1})), rel=1e-5)
    # the next task's Fisher joins the running one decayed by gamma
    later = method.end_task(after, INFO, (jnp.asarray(X), jnp.asarray(Y)), jax.random.key(3))
    f2 = hand_fisher(float(after.net.params["w"]), float(after.net.params["b"]))
    for k in ("w", "b"):
        np.testing.assert_allclose(later.fisher[k], 0.5 * f1[k] + f2[k], rtol=1e-5)


def si(**kw):
    return methods.get("si").make(model=TwoParams(), input_fn=identity, **kw)


def test_si_omega_is_the_path_integral_and_omega_big_its_normalisation():
    """Along a known trajectory (SGD at lr without a penalty, gradients under the clip),
    omega = sum_k g_k (theta_k - theta_k+1) = lr * sum_k g_k^2; at the task's end
    Omega = omega / ((theta - theta_0)^2 + xi), and the next steps add 2 c Omega (theta -
    theta_c) before clipping."""
    lr, c, xi = 0.05, 2.0, 0.3
    XS = 0.4 * X  # gradients under the clip
    method = si(lr=lr, c=c, xi=xi)
    state = method.init(jax.random.key(0), X[:1])
    start = {k: float(v) for k, v in state.net.params.items()}
    step = jax.jit(method.train_step)
    expected = {"w": 0.0, "b": 0.0}
    params = dict(start)

    def ce(params, i):
        z = params["w"] * XS[i : i + 2, 0] + params["b"]
        logits = jnp.stack([z, -z], -1)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), Y[i : i + 2]])

    for i in range(3):
        g = jax.grad(ce)(params, i)
        assert all(abs(float(v)) < 1 for v in g.values())  # under the clip
        for k in expected:
            expected[k] += lr * float(g[k]) ** 2
            params[k] -= lr * float(g[k])
        batch = {"x": jnp.asarray(XS[i : i + 2]), "y": jnp.asarray(Y[i : i + 2])}
        state, _ = step(state, batch, jax.random.key(i))
    for k in expected:
        np.testing.assert_allclose(state.net.params[k], params[k], rtol=1e-5)
        np.testing.assert_allclose(state.small_omega[k], expected[k], rtol=1e-4)
    ended = method.end_task(state, INFO, None, jax.random.key(9))
    for k in expected:
        big = expected[k] / ((params[k] - start[k]) ** 2 + xi)
        np.testing.assert_allclose(ended.big_omega[k], big, rtol=1e-4)
        np.testing.assert_allclose(ended.checkpoint[k], params[k], rtol=1e-6)
        assert float(ended.small_omega[k]) == 0.0
    # the surrogate's gradient, then the clip to [-1, 1] of Mammoth
    far = ended.replace(
        net=ended.net.replace(params={"w": jnp.asarray(40.0), "b": ended.net.params["b"]})
    )
    after, _ = step(far, {"x": jnp.asarray(XS[:2]), "y": jnp.asarray(Y[:2])}, jax.random.key(5))
    np.testing.assert_allclose(after.net.params["w"], 40.0 - lr * 1.0, rtol=1e-6)  # clipped
    g = jax.grad(ce)({"w": 40.0, "b": float(ended.net.params["b"])}, 0)
    b_grad = float(g["b"])  # theta_c of b is where b is: no surrogate term
    np.testing.assert_allclose(
        after.net.params["b"], float(ended.net.params["b"]) - lr * np.clip(b_grad, -1, 1), rtol=1e-5
    )
    # unclipped: a small step off theta_c adds exactly 2 c Omega (theta - theta_c)
    w_c, b_c = float(ended.checkpoint["w"]), float(ended.checkpoint["b"])
    near = ended.replace(
        net=ended.net.replace(params={"w": jnp.asarray(w_c + 0.01), "b": ended.net.params["b"]})
    )
    after, _ = step(near, {"x": jnp.asarray(XS[:2]), "y": jnp.asarray(Y[:2])}, jax.random.key(6))
    g_w = float(jax.grad(ce)({"w": w_c + 0.01, "b": b_c}, 0)["w"])
    total = g_w + 2 * c * float(ended.big_omega["w"]) * 0.01
    assert abs(total) < 1
    np.testing.assert_allclose(after.net.params["w"], w_c + 0.01 - lr * total, rtol=1e-5)


@pytest.mark.parametrize("omega", ["paper", "path"])
def test_si_importance_is_the_papers_or_the_path_integral(omega):
    """Where the two formulas part: a step with the penalty on and w's total gradient over
    the clip. `"paper"` (the code the DER paper ran) gathers lr * g^2 of the clipped total
    gradient; `"path"` (Mammoth since 2024) the unclipped cross-entropy gradient times the
    step taken."""
    lr, c, xi = 0.05, 2.0, 0.3
    method = si(lr=lr, c=c, xi=xi, omega=omega)
    state = method.init(jax.random.key(0), X[:1])
    omega_big = {"w": jnp.asarray(3.0), "b": jnp.asarray(0.5)}
    theta_c = {"w": jnp.asarray(0.2), "b": jnp.asarray(-0.2)}
    state = state.replace(big_omega=omega_big, checkpoint=theta_c)
    batch = {"x": jnp.asarray(X[:2]), "y": jnp.asarray(Y[:2])}
    after, _ = jax.jit(method.train_step)(state, batch, jax.random.key(1))

    def ce(p):
        z = p["w"] * X[:2, 0] + p["b"]
        return -jnp.mean(jax.nn.log_softmax(jnp.stack([z, -z], -1))[jnp.arange(2), Y[:2]])

    params = {"w": 0.7, "b": -0.2}
    g_ce = {k: float(v) for k, v in jax.grad(ce)(params).items()}
    total = {
        k: g_ce[k] + 2 * c * float(omega_big[k]) * (params[k] - float(theta_c[k])) for k in g_ce
    }
    clipped = {k: float(np.clip(v, -1, 1)) for k, v in total.items()}
    assert abs(total["w"]) > 1  # the clip is active: the formulas differ
    step = {k: -lr * clipped[k] for k in g_ce}
    for k in g_ce:
        np.testing.assert_allclose(after.net.params[k], params[k] + step[k], rtol=1e-5)
        want = lr * clipped[k] ** 2 if omega == "paper" else g_ce[k] * -step[k]
        np.testing.assert_allclose(after.small_omega[k], want, rtol=1e-4, atol=1e-9)
