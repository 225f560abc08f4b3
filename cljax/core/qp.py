"""A small bound-constrained convex QP, solved exactly inside `jit`: GEM's dual problem.

    minimise 0.5 v^T Q v + c^T v   subject to   v_i >= lower_i  (i in `active`),
                                                  v_i = 0        (i not in `active`)

with `Q` symmetric positive definite and a handful of variables (one per past
task: at most ~20). `solve` is the active-set method of Lawson and Hanson (NNLS,
here in its quadratic form, after shifting `v` by `lower`): it adds the most
violated bound to the free set, solves the equality-constrained problem on the
free set exactly (a Cholesky-free masked linear solve), and steps back to
feasibility when a free variable would cross its bound. It terminates with the
exact optimum (up to the linear solves' rounding) in a finite number of steps;
the loops are bounded by `max_iter` for `jit`. Why not a generic solver: the
problem is tiny and static-shaped, and a fixed-point method (projected gradient,
coordinate descent) needs many iterations when the task gradients are nearly
collinear, as they are; the active set gives the optimum quadprog (GEM's and
Mammoth's solver) returns.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _solve_free(Q, b, free):
    """`s` with `s[free]` solving `Q[free, free] s[free] = b[free]` and 0 elsewhere."""
    f = free.astype(Q.dtype)
    A = Q * f[:, None] * f[None, :] + jnp.diag(1.0 - f)
    return jnp.linalg.solve(A, b * f) * f


def solve(Q, c, lower, active, max_iter: int | None = None, tol: float = 1e-10):
    """`v` minimising `0.5 v'Qv + c'v` with `v >= lower` on `active` and `v = 0` off it.

    All arguments are arrays of one float dtype: `Q` (n, n) symmetric positive
    definite, `c`, `lower` (n,), `active` (n,) booleans.
    """
    n = c.shape[0]
    max_iter = max_iter or 3 * n + 10
    # u = v - lower >= 0 on the active set: minimise 0.5 u'Qu + (c + Q lower)'u
    lower = jnp.where(active, lower, 0.0)
    c = c + Q @ lower

    def neg_grad(u):
        return jnp.where(active, -(Q @ u + c), 0.0)

    def inner(state):  # step back towards feasibility until the free solution is positive
        u, free, it = state
        s = _solve_free(Q, -c, free)
        bad = free & (s <= tol)
        ratio = jnp.where(bad, u / jnp.where(bad, jnp.maximum(u - s, 1e-30), 1.0), jnp.inf)
        alpha = jnp.minimum(jnp.min(ratio), 1.0)
        u_new = jnp.where(bad.any(), u + alpha * (s - u), s)
        free_new = jnp.where(bad.any(), free & (u_new > tol), free)
        return jnp.where(free_new, jnp.maximum(u_new, 0.0), 0.0), free_new, it + 1

    def inner_continues(state):
        u, free, it = state
        s = _solve_free(Q, -c, free)
        return (free & (s <= tol)).any() & (it < max_iter)

    def outer(state):
        u, free, it = state
        w = neg_grad(u)
        j = jnp.argmax(jnp.where(free | ~active, -jnp.inf, w))
        free = free.at[j].set(True)
        u, free, it = jax.lax.while_loop(inner_continues, inner, (u, free, it + 1))
        s = _solve_free(Q, -c, free)
        return jnp.where(free, s, 0.0), free, it

    def outer_continues(state):
        u, free, it = state
        w = neg_grad(u)
        return (jnp.where(free | ~active, -jnp.inf, w) > tol).any() & (it < max_iter)

    u0 = jnp.zeros_like(c)
    u, _, _ = jax.lax.while_loop(outer_continues, outer, (u0, jnp.zeros(n, bool), 0))
    return jnp.where(active, u + lower, 0.0)
