"""GEM: the dual QP solved exactly inside jit, the projection it gives, the episodic memory."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import models, train
from cljax.core import qp
from cljax.methods import gem
from tests.conftest import tiny_scenario

SC = tiny_scenario()


def brute_force_qp(Q, c, lower, active):
    """The optimum by enumerating which variables sit at their bound."""
    n, best = len(c), None
    for r in range(n + 1):
        for at_bound in itertools.combinations(range(n), r):
            v = np.where(active, lower, 0.0)
            free = [i for i in range(n) if active[i] and i not in at_bound]
            if free:
                rest = [i for i in range(n) if i not in free]
                rhs = -(c[free] + Q[np.ix_(free, rest)] @ v[rest])
                v[free] = np.linalg.solve(Q[np.ix_(free, free)], rhs)
            if (v[active] >= lower[active] - 1e-9).all():
                f = 0.5 * v @ Q @ v + c @ v
                if best is None or f < best[0]:
                    best = (f, v)
    return best[1]


solve = jax.jit(qp.solve)


def test_qp_solution_is_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = 1 + trial % 4
        M = rng.normal(size=(n, 6))
        if trial % 3 == 0:  # nearly collinear task gradients, as in practice
            M = M[:1] + 0.01 * rng.normal(size=(n, 6))
        Q = M @ M.T + 1e-3 * np.eye(n)
        c = 3 * rng.normal(size=n)
        lower = np.full(n, 0.5 * (trial % 2))
        active = rng.random(n) < 0.8
        want = brute_force_qp(Q, c, lower, active)
        got = np.asarray(solve(*(jnp.asarray(a, jnp.float32) for a in (Q, c, lower)), active))
        assert (got[active] >= lower[active] - 1e-6).all() and (got[~active] == 0).all()
        f_got, f_want = (0.5 * v @ Q @ v + c @ v for v in (got, want))
        assert f_got <= f_want + 1e-5 * max(1.0, abs(f_want))


def closest_feasible(g, G):
    """argmin |z - g|^2 subject to G z >= 0, by enumerating the active constraints."""
    best = None
    for r in range(len(G) + 1):
        for act in itertools.combinations(range(len(G)), r):
            z = g.copy()
            if act:
                A = G[list(act)]
                lam = np.linalg.solve(A @ A.T, -(A @ g))
                if (lam < -1e-12).any():
                    continue
                z = g + A.T @ lam
            if (G @ z >= -1e-9).all() and (best is None or np.sum((z - g) ** 2) < best[0]):
                best = (np.sum((z - g) ** 2), z)
    return best[1]


@pytest.mark.parametrize("tasks", [2, 3])
def test_projection_meets_every_constraint_and_is_the_closest_such_gradient(tasks):
    rng = np.random.default_rng(tasks)
    G = rng.normal(size=(tasks, 8))
    g = -G.sum(0) + 0.3 * rng.normal(size=8)  # conflicts with the memories
    assert (G @ g < 0).any()
    stored = jnp.ones(tasks, bool)
    out = np.asarray(
        gem.project(jnp.asarray(g, jnp.float32), jnp.asarray(G, jnp.float32), stored, 0.0, eps=0.0)
    )
    assert (G @ out >= -1e-4).all()
    np.testing.assert_allclose(out, closest_feasible(g, G), atol=1e-4)
    # Mammoth's ridge and margin: g~ = g + v G with v the dual optimum, v >= gamma, and the
    # constraints hold to the ridge, G g~ >= -eps v (the dual's optimality conditions)
    g32, G32 = jnp.asarray(g, jnp.float32), jnp.asarray(G, jnp.float32)
    ridged = np.asarray(gem.project(g32, G32, stored, 0.5))
    Q = G32 @ G32.T + gem.EPS * jnp.eye(tasks)
    v = np.asarray(qp.solve(Q, G32 @ g32, jnp.full(tasks, 0.5), stored))
    assert (v >= 0.5 - 1e-6).all()
    np.testing.assert_allclose(ridged, g + v @ G, rtol=1e-4, atol=1e-5)
    assert (G @ ridged >= -gem.EPS * v - 1e-4).all()
    # a task without memory is no constraint; without a conflict the gradient is kept
    only_second = jnp.arange(tasks) == 1
    same = gem.project(G32[1], G32, only_second, 0.5)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(G32[1]))


def test_memory_holds_an_equal_random_share_of_each_finished_task():
    method = gem.make(model=models.MLP((8,), SC.num_classes), input_fn=SC.input_fn, buffer_size=9)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    info = train.task_info(SC, train.RunConfig(batch_size=4, epochs=1), 0)
    state = method.begin_task(state, info, jax.random.key(1))
    assert state.mem_x.shape[:2] == (SC.num_tasks, 9 // SC.num_tasks)
    state = method.end_task(state, info, SC.train(0), jax.random.key(2))
    assert np.asarray(state.stored).tolist() == [True, False]
    x0, y0 = SC.train(0)
    for item, label in zip(np.asarray(state.mem_x[0]), np.asarray(state.mem_y[0]), strict=True):
        match = (x0 == item).all(axis=(1, 2))
        assert match.any() and label in y0[match]
