"""EWC (offline), SI and LwF as van de Ven et al.'s code runs them (GMvandeVen/continual-learning
e6d795a): the Fisher, the penalty, the importance and the losses against PyTorch computations
written as that code's `continual_learner.py` and `classifier.py` compute them."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cljax import methods
from cljax.methods import TaskInfo
from cljax.methods import ewc as ewc_lib

X = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
Y = np.asarray([2, 3, 3, 2, 2, 3, 2], np.int32)  # task 1's classes of a 2-class-a-task split


class Tiny(nn.Module):
    """A user's own MLP: 5 -> 6 -> 4."""

    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train=False):
        del train
        hidden = nn.relu(nn.Dense(6)(x))
        return nn.Dense(self.num_classes)(hidden)


def identity(x, key, train):
    del key, train
    return x.astype(jnp.float32)


def build(name, num_classes=4, **overrides):
    model = Tiny(num_classes)
    return methods.get(name).make(model=model, input_fn=identity, **overrides)


def torch_net(params):
    """The same network in PyTorch (Flax's kernels transposed)."""
    d0, d1 = params["Dense_0"], params["Dense_1"]
    net = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    with torch.no_grad():
        for layer, p in ((net[0], d0), (net[2], d1)):
            layer.weight.copy_(torch.tensor(np.asarray(p["kernel"]).T))
            layer.bias.copy_(torch.tensor(np.asarray(p["bias"])))
    return net


def leaves(*trees):
    """The trees' leaves side by side."""
    return zip(*(jax.tree.leaves(t) for t in trees), strict=True)


def reference_fisher(net, allowed=None, labels="all"):
    """`estimate_fisher` of that code: items one at a time, every allowed output's
    log-likelihood gradient squared and weighted by its predicted probability (`"all"`) or
    the true label's (`"true"`); the sum divided by the last index (n - 1)."""
    est = [torch.zeros_like(p) for p in net.parameters()]
    for index, (x, y) in enumerate(zip(X, Y, strict=True)):  # noqa: B007 (read after)
        output = net(torch.tensor(x[None]))
        if allowed is not None:
            output = output[:, allowed]
        if labels == "all":
            weights = F.softmax(output, dim=1).detach()
            for c in range(output.shape[1]):
                net.zero_grad()
                F.cross_entropy(output, torch.tensor([c])).backward(retain_graph=True)
                for e, p in zip(est, net.parameters(), strict=True):
                    e += weights[0][c] * p.grad.detach() ** 2
        else:
            label = allowed.index(int(y)) if allowed is not None else int(y)
            net.zero_grad()
            F.nll_loss(F.log_softmax(output, dim=1), torch.tensor([label])).backward()
            for e, p in zip(est, net.parameters(), strict=True):
                e += p.grad.detach() ** 2
    return [e / index for e in est]


def as_torch_order(tree):
    """Flax's parameters in `torch_net`'s order (weights transposed)."""
    out = []
    for layer in ("Dense_0", "Dense_1"):
        out += [np.asarray(tree[layer]["kernel"]).T, np.asarray(tree[layer]["bias"])]
    return out


@pytest.mark.parametrize(
    "overrides, allowed",
    [({}, None), ({"task_heads": 2}, [2, 3]), ({"fisher_labels": "true"}, None)],
)
def test_ewc_fisher_is_the_references_estimate(overrides, allowed):
    method = build("ewc", **overrides)
    state = method.init(jax.random.key(0), X[:1])
    config = method.config
    got = ewc_lib.fisher(config, identity, state.net, jnp.asarray(X), jnp.asarray(Y))
    want = reference_fisher(torch_net(state.net.params), allowed, config.fisher_labels)
    for g, w in zip(as_torch_order(got), want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=2e-5, atol=1e-9)


def test_ewc_penalty_is_a_term_per_finished_task():
    """After two tasks the step's gradient is that of CE + lambda/2 sum_t F_t (theta -
    theta_t)^2 with each task's own Fisher and anchor (SGD at lr 1: the update is -grad)."""
    method = build("ewc", optimizer="sgd", lr=1.0, ewc_lambda=50.0)
    config = method.config
    state = method.init(jax.random.key(0), X[:1])
    data = (jnp.asarray(X), jnp.asarray(Y))
    terms = []
    for t in range(2):
        f_t = ewc_lib.fisher(config, identity, state.net, *data)
        terms.append((f_t, state.net.params))
        state = method.end_task(state, TaskInfo.of(t, [(0, 1), (2, 3), (4, 5)]), data, None)
        shift = 0.3 * (t + 1)
        moved = jax.tree.map(lambda p, s=shift: p + s * jnp.sign(p), state.net.params)
        state = state.replace(net=state.net.replace(params=moved))
    last = TaskInfo.of(2, [(0, 1), (2, 3), (4, 5)])
    assert method.end_task(state, last, data, None) is state  # no Fisher after the last task
    batch = {"x": jnp.asarray(X[:4]), "y": jnp.asarray(Y[:4])}
    new, _ = method.train_step(state, batch, jax.random.key(1))

    def loss(params):
        logits = state.net.apply_fn({"params": params}, batch["x"])
        ce = jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(4), batch["y"]])
        penalty = sum(
            sum(jnp.sum(f * (p - a) ** 2) for f, p, a in leaves(fisher, params, anchor))
            for fisher, anchor in terms
        )
        return ce + 50.0 / 2 * penalty

    want = jax.grad(loss)(state.net.params)
    got = jax.tree.map(jnp.subtract, state.net.params, new.net.params)
    for g, w in leaves(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_si_total_importance_is_the_whole_gradient_times_the_adam_step():
    """`omega="total"`: omega gains g * (theta_before - theta_after) with g the gradient of
    CE plus the surrogate (that code's `p.grad` after the whole backward), Adam, no clip."""
    method = build("si", omega="total", optimizer="adam", lr=0.01, clip=0.0, c=3.0, xi=0.1)
    state = method.init(jax.random.key(0), X[:1])
    big = jax.tree.map(lambda p: jnp.abs(p) + 0.5, state.net.params)
    anchor = jax.tree.map(lambda p: p - 0.2, state.net.params)
    state = state.replace(big_omega=big, checkpoint=anchor)
    batch = {"x": jnp.asarray(X), "y": jnp.asarray(Y)}
    new, _ = method.train_step(state, batch, jax.random.key(1))

    def loss(params):
        logits = state.net.apply_fn({"params": params}, batch["x"])
        ce = jnp.mean(-jax.nn.log_softmax(logits)[jnp.arange(7), batch["y"]])
        surrogate = sum(jnp.sum(o * (p - a) ** 2) for o, p, a in leaves(big, params, anchor))
        return ce + 3.0 * surrogate

    g = jax.grad(loss)(state.net.params)
    want = jax.tree.map(lambda g, b, a: g * (b - a), g, state.net.params, new.net.params)
    for got, w in leaves(new.small_omega, want):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-10)
    # Adam's first step moves each parameter by lr (sign of g): not clipped, not SGD
    step = jax.tree.map(jnp.subtract, state.net.params, new.net.params)
    for s, gg in leaves(step, g):
        np.testing.assert_allclose(s, 0.01 * np.sign(gg), rtol=1e-3, atol=1e-7)


def reference_lwf_loss(logits, teacher, y, scenario, past_tasks):
    """`train_a_batch` with current-data replay and distillation, as that code builds it:
    class-IL: CE + KD over every output; domain-IL: CE + (t - 1) KD; task-IL: CE over the
    item's head, KD over each earlier head averaged, times (t - 1)."""
    s, t = torch.tensor(np.asarray(logits)), torch.tensor(np.asarray(teacher))
    y = torch.tensor(np.asarray(y), dtype=torch.long)

    def kd(scores, target):
        return (-F.softmax(target / 2.0, 1) * F.log_softmax(scores / 2.0, 1)).sum(1).mean()

    if scenario == "task":
        heads = [[2 * j, 2 * j + 1] for j in range(past_tasks + 1)]
        ce = F.cross_entropy(s[:, heads[-1]], y - 2 * past_tasks)
        replay = sum(kd(s[:, h], t[:, h]) for h in heads[:-1]) / past_tasks
        return float(ce + replay * past_tasks)
    ce = F.cross_entropy(s, y)
    return float(ce + kd(s, t) * (past_tasks if scenario == "domain" else 1))


@pytest.mark.parametrize(
    "scenario, overrides",
    [
        ("class", {}),
        ("domain", {"past_weight": True}),
        ("task", {"task_heads": 2}),
    ],
)
def test_lwf_as_van_de_ven_runs_it(scenario, overrides):
    """The third task (two earlier ones: the domain-IL weight and the task-IL sum show)."""
    method = build(
        "lwf", 6, columns="all", warmup=False, wd_reg=0.0, optimizer="adam", lr=0.01, **overrides
    )
    state = method.init(jax.random.key(0), X[:1])
    task = TaskInfo.of(2, [(0, 1), (2, 3), (4, 5)])
    if scenario == "domain":  # every task's labels are 0 and 1
        task = TaskInfo(2, (0, 1), (0, 1))
    # a teacher unlike the student: the network moved on from it
    teacher = jax.tree.map(lambda p: p * 1.5 - 0.1, state.net.params)
    state = method.begin_task_data(state, task, (X, Y), jax.random.key(2))
    state = method.begin_task(state, task, jax.random.key(3))
    state = state.replace(teacher=teacher)
    y = Y % 2 if scenario == "domain" else Y + 2
    _, out = method.train_step(state, {"x": jnp.asarray(X), "y": jnp.asarray(y)}, None)
    logits = state.net.apply_fn({"params": state.net.params}, jnp.asarray(X))
    teacher_logits = state.net.apply_fn({"params": teacher}, jnp.asarray(X))
    want = reference_lwf_loss(logits, teacher_logits, y, scenario, 2)
    np.testing.assert_allclose(float(out["loss"]), want, rtol=1e-5)
    assert float(out["kd"]) > 0.01  # the teacher differs: the term is there


def test_lwf_mammoths_columns_are_unchanged_by_the_new_options():
    """`columns="seen"` (the default) still distils the past classes only and, in a
    domain-IL run (no past classes), nothing."""
    method = build("lwf", warmup=False)
    state = method.init(jax.random.key(0), X[:1])
    task = TaskInfo(1, (0, 1), (0, 1))
    state = method.begin_task(state, task, None)
    _, out = method.train_step(state, {"x": jnp.asarray(X), "y": jnp.asarray(Y % 2)}, None)
    assert float(out["kd"]) == 0.0 and np.isfinite(float(out["loss"]))


def test_a_balanced_task_memory_takes_an_equal_share_of_each_class():
    from cljax.methods.common import task_memory_pick

    y = jnp.asarray([2] * 30 + [3] * 7 + [2] * 13)
    pick = np.asarray(task_memory_pick(y, (2, 3), 12, jax.random.key(0), balanced=True))
    assert len(set(pick.tolist())) == 12
    assert (np.asarray(y)[pick] == 2).sum() == 6 and (np.asarray(y)[pick] == 3).sum() == 6
    unbalanced = task_memory_pick(y, (2, 3), 12, jax.random.key(0), balanced=False)
    assert len(set(np.asarray(unbalanced).tolist())) == 12


def memory_state(method, n):
    """A state after task 0 (classes 0, 1) whose memory holds exactly `n` items, and task 1
    (classes 2, 3) begun."""
    tasks = [(0, 1), (2, 3), (4, 5)]
    state = method.init(jax.random.key(0), X[:1])
    x0 = np.random.default_rng(1).normal(size=(40, 5)).astype(np.float32)
    y0 = np.asarray([0, 1] * 20, np.int32)
    state = method.end_task(state, TaskInfo.of(0, tasks), (x0, y0), jax.random.key(2))
    state = method.begin_task(state, TaskInfo.of(1, tasks), None)
    return state


@pytest.mark.parametrize("heads", [0, 2])
def test_er_task_end_memory_and_task_weighting_as_van_de_ven_runs_it(heads):
    """Task 2 (t = 2 counting from 1): CE(current) / 2 + CE(replayed) / 2, the replayed items
    the whole memory (it holds exactly `minibatch_size`), each on its head with task_heads."""
    method = build(
        "er",
        6,
        memory="task_end",
        weighting="tasks",
        balanced=True,
        buffer_size=12,
        minibatch_size=4,
        optimizer="adam",
        task_heads=heads,
    )
    state = memory_state(method, 4)
    mem_y = np.asarray(state.buffer.data["y"])[:4]
    assert sorted(mem_y.tolist()) == [0, 0, 1, 1]  # 12 // 3 tasks = 4: two of each class
    batch = {"x": jnp.asarray(X), "y": jnp.asarray(Y)}
    _, out = method.train_step(state, batch, jax.random.key(3))
    apply = state.net.apply_fn
    s_cur = torch.tensor(np.asarray(apply({"params": state.net.params}, jnp.asarray(X))))
    mem_x = state.buffer.data["x"][:4]
    s_mem = torch.tensor(np.asarray(apply({"params": state.net.params}, mem_x)))
    y, ym = torch.tensor(Y, dtype=torch.long), torch.tensor(mem_y, dtype=torch.long)
    if heads:  # that code's task-IL: each context's outputs, labels within them
        current = F.cross_entropy(s_cur[:, 2:4], y - 2)
        replayed = F.cross_entropy(s_mem[:, 0:2], ym)
    else:
        current, replayed = F.cross_entropy(s_cur, y), F.cross_entropy(s_mem, ym)
    np.testing.assert_allclose(float(out["loss"]), float(current / 2 + replayed / 2), rtol=1e-5)


def test_agem_balanced_memory_and_heads_as_van_de_ven_runs_it():
    """The reference gradient is the memory's CE on each item's head, and the step (SGD at
    lr 1: the update is the gradient) is the current gradient projected against it."""
    method = build(
        "agem",
        6,
        balanced=True,
        buffer_size=12,
        minibatch_size=4,
        task_heads=2,
        lr=1.0,
        augment_reference=False,
    )
    state = memory_state(method, 4)
    net = torch_net6(state.net.params)
    mem_x = torch.tensor(np.asarray(state.buffer.data["x"][:4]))
    mem_y = torch.tensor(np.asarray(state.buffer.data["y"][:4]), dtype=torch.long)

    def grad_of(loss):
        net.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten().clone() for p in net.parameters()])

    g = grad_of(F.cross_entropy(net(torch.tensor(X))[:, 2:4], torch.tensor(Y - 2).long()))
    g_ref = grad_of(F.cross_entropy(net(mem_x)[:, 0:2], mem_y))
    dot = (g * g_ref).sum()
    assert dot < 0  # the projection is taken
    want = g - dot / (g_ref * g_ref).sum() * g_ref
    batch = {"x": jnp.asarray(X), "y": jnp.asarray(Y)}
    new, _ = method.train_step(state, batch, jax.random.key(4))
    step = jax.tree.map(jnp.subtract, state.net.params, new.net.params)
    got = np.concatenate([a.flatten() for a in as_torch_order(step)])
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-6)


def torch_net6(params):
    """`torch_net` with six outputs."""
    net = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU(), torch.nn.Linear(6, 6))
    with torch.no_grad():
        for layer, p in ((net[0], params["Dense_0"]), (net[2], params["Dense_1"])):
            layer.weight.copy_(torch.tensor(np.asarray(p["kernel"]).T))
            layer.bias.copy_(torch.tensor(np.asarray(p["bias"])))
    return net


def test_lwf_log_distillation_is_mammoths_value_and_stays_finite_where_it_is_sure():
    from cljax.methods import lwf

    every = jnp.ones(3, bool)
    t, s = jnp.asarray([[0.3, -1.0, 2.0]]), jnp.asarray([[1.0, 0.5, -0.2]])
    np.testing.assert_allclose(
        lwf.log_distillation(t, s, every, 2.0), lwf.distillation(t, s, every, 2.0), rtol=1e-6
    )
    sure = jnp.asarray([[200.0, -200.0, 0.0]])  # softmax underflows to 0: Mammoth's form NaNs
    grad = jax.grad(lambda s: lwf.log_distillation(t, s, every, 2.0))(sure)
    assert np.isfinite(np.asarray(grad)).all()
