"""BatchNorm statistics of frozen networks and auxiliary passes, as the reference runs them
(issue 46, item 2): on a network with BatchNorm, a frozen teacher runs in inference mode
with the statistics it was frozen with, whatever the student's do meanwhile; the
auxiliary passes read and move the running statistics as Mammoth's (5dc82be) do."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cljax import models
from cljax.core import buffer as buffer_lib
from cljax.methods import TaskInfo, agem, agem_r, ewc_on, fdr, gem, icarl, lwf
from cljax.methods.common import cross_entropy, replay_batch
from cljax.models.backbones import BatchNorm
from tests.conftest import tiny_scenario

SC = tiny_scenario()
NUM_TASKS = SC.num_tasks


class TinyBN(nn.Module):
    """dense -> BatchNorm -> relu -> dense; its features (the last layer's input) with
    `num_classes=None`."""

    num_classes: int | None = SC.num_classes

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(8)(x.reshape((x.shape[0], -1)))
        h = nn.relu(BatchNorm()(h, train))
        return h if self.num_classes is None else nn.Dense(self.num_classes)(h)


def image_input(x, key, train):
    """The tiny scenario's inputs as one-channel images (for the ResNet)."""
    return SC.input_fn(x, key, train)[..., None]


MODELS = {
    "tiny-bn": (lambda: TinyBN(), SC.input_fn),
    "resnet18": (lambda: models.ResNet18(SC.num_classes, nf=4), image_input),
}


def shifted_input(x, key, train):
    """An 'augmentation' that is easy to see: training inputs shifted by 0.5."""
    return SC.input_fn(x, key, train) + (0.5 if train else 0.0)


def task(t, batch_size=4) -> TaskInfo:
    seen = tuple(c for j in range(t + 1) for c in SC.classes(j))
    per_epoch = -(-SC.train_sizes[t] // batch_size)
    return TaskInfo(t, SC.classes(t), seen, per_epoch, 0, batch_size, 1, NUM_TASKS)


def data(t):
    return tuple(jnp.asarray(a) for a in SC.train(t))


def batches(t, n=4):
    x, y = data(t)
    return [{"x": x[i : i + n], "y": y[i : i + n]} for i in range(0, len(y) - n + 1, n)]


def apply(model, params, stats, x, train):
    """`(logits, new statistics)` of `model` in training or inference mode."""
    variables = {"params": params, "batch_stats": stats}
    if train:
        out, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return out, upd["batch_stats"]
    return model.apply(variables, x, train=False), stats


def assert_trees_close(a, b, **tol):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **tol), a, b)


def trees_differ(a, b, atol=1e-4) -> bool:
    return any(
        not np.allclose(u, v, atol=atol)
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def first_task(method, steps=3):
    """init and the first task's steps (not its end): `(state, jitted train_step)`."""
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    state = method.begin_task(state, task(0), jax.random.key(1))
    step = jax.jit(method.train_step)
    for i, b in enumerate(batches(0)[:steps]):
        state, _ = step(state, b, jax.random.key(10 + i))
    return state, step


def train_first_task(method, steps=3):
    """The state at the second task's start (the first task ended), and the jitted step."""
    state, step = first_task(method, steps)
    return method.end_task(state, task(0), data(0), jax.random.key(2)), step


def stored_in_order(memory, m):
    """FDR's stored logits of the newest task, in its loader's order."""
    rank = np.where(memory.valid, memory.rank, np.iinfo(np.int32).max)
    return np.asarray(memory.logits)[np.argsort(rank, kind="stable")][:m]


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_lwf_teacher_runs_in_eval_mode_with_the_statistics_of_the_task_start(model_name):
    make_model, input_fn = MODELS[model_name]
    model = make_model()
    method = lwf.make(model=model, input_fn=input_fn, lr=0.1)
    state, step = train_first_task(method)
    state = method.begin_task(state, task(1), jax.random.key(3))
    state = method.begin_task_data(state, task(1), data(1), jax.random.key(4))
    frozen_params, frozen_stats = state.net.params, state.net.batch_stats
    past = np.isin(np.arange(SC.num_classes), SC.classes(0))
    for i, b in enumerate(batches(1)):
        plain = input_fn(b["x"], None, False)
        # Mammoth's stored logits: the network at the task's start, in eval mode
        teacher, _ = apply(model, frozen_params, frozen_stats, plain, False)
        student, _ = apply(model, state.net.params, state.net.batch_stats, plain, True)
        want = lwf.distillation(teacher, student, past, 2.0)
        state, metrics = step(state, b, jax.random.key(20 + i))
        np.testing.assert_allclose(float(metrics["kd"]), float(want), rtol=1e-5, atol=1e-7)
    # the student's statistics moved: live ones would have given other targets
    assert trees_differ(state.net.batch_stats, frozen_stats)
    live, _ = apply(model, frozen_params, state.net.batch_stats, plain, False)
    assert trees_differ(live, teacher)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_icarl_previous_network_runs_in_eval_mode_with_the_statistics_of_the_task_end(model_name):
    make_model, input_fn = MODELS[model_name]
    model = make_model()
    method = icarl.make(model=model, input_fn=input_fn, lr=0.1, buffer_size=8)
    state, step = train_first_task(method)
    frozen_params, frozen_stats = state.net.params, state.net.batch_stats
    state = method.begin_task(state, task(1), jax.random.key(3))
    past = np.isin(np.arange(SC.num_classes), SC.classes(0))
    for i, b in enumerate(batches(1)):
        x = input_fn(b["x"], None, True)
        # Mammoth's deepcopy(self.net.eval()) of the task's end
        old, _ = apply(model, frozen_params, frozen_stats, x, False)
        logits, _ = apply(model, state.net.params, state.net.batch_stats, x, True)
        targets = np.where(past, jax.nn.sigmoid(old), jax.nn.one_hot(b["y"], SC.num_classes))
        bce = optax.sigmoid_binary_cross_entropy(logits, targets)  # every class seen by now
        state, metrics = step(state, b, jax.random.key(20 + i))
        np.testing.assert_allclose(float(metrics["bce"]), float(bce.mean()), rtol=1e-5)
    assert trees_differ(state.net.batch_stats, frozen_stats)
    live, _ = apply(model, frozen_params, state.net.batch_stats, x, False)
    assert trees_differ(live, old)


def test_fdr_stores_the_logits_of_mammoths_training_mode_pass_and_its_running_statistics():
    """Mammoth's end_task runs its shuffled loader in training mode, batch by batch, one batch
    past the `m` items it stores (5dc82be fdr.py:52-65); the eval option is inference mode,
    the statistics unchanged."""
    model = TinyBN()
    m, bs = 8, 4  # task 0 stores 8 items, from 8 // 4 + 2 = 4 of its 6 batches
    method = fdr.make(model=model, input_fn=SC.input_fn, buffer_size=m, minibatch_size=4)
    before, _ = first_task(method)
    state = method.end_task(before, task(0, bs), data(0), jax.random.key(2))
    x, _ = data(0)
    k_pick, _ = jax.random.split(jax.random.key(2))
    order = jax.random.permutation(k_pick, x.shape[0])
    stats, logits = before.net.batch_stats, []
    for j in range(m // bs + 2):
        xb = SC.input_fn(x[order[j * bs : (j + 1) * bs]], None, True)
        out, stats = apply(model, before.net.params, stats, xb, True)
        logits.append(out)
    want = np.concatenate(logits)[:m]
    np.testing.assert_allclose(stored_in_order(state.memory, m), want, rtol=1e-5, atol=1e-6)
    assert_trees_close(state.net.batch_stats, stats, rtol=1e-5, atol=1e-6)
    assert trees_differ(stats, before.net.batch_stats)

    # stored_logits="eval": inference mode, the running statistics left alone
    method = fdr.make(
        model=model, input_fn=SC.input_fn, buffer_size=m, minibatch_size=4, stored_logits="eval"
    )
    state = method.end_task(before, task(0, bs), data(0), jax.random.key(2))
    xs = SC.input_fn(x[order[:m]], None, False)
    want, _ = apply(model, before.net.params, before.net.batch_stats, xs, False)
    np.testing.assert_allclose(stored_in_order(state.memory, m), want, rtol=1e-5, atol=1e-6)
    jax.tree.map(np.testing.assert_array_equal, state.net.batch_stats, before.net.batch_stats)


def test_agem_memory_pass_moves_the_running_statistics_after_the_batch():
    """Mammoth's A-GEM: the batch, then the memory, both in training mode (agem.py:52, 61)."""
    model = TinyBN()
    method = agem.make(model=model, input_fn=SC.input_fn, buffer_size=8, minibatch_size=4)
    state, step = train_first_task(method)
    b = batches(1)[0]
    new, _ = step(state, b, jax.random.key(5))
    k_cur, k_mem = jax.random.split(jax.random.key(5))
    _, stats = apply(
        model, state.net.params, state.net.batch_stats, SC.input_fn(b["x"], k_cur, True), True
    )
    mem_x, _, _ = replay_batch(state, k_mem, 4, SC.input_fn)
    _, stats = apply(model, state.net.params, stats, mem_x, True)
    assert_trees_close(new.net.batch_stats, stats, rtol=1e-5, atol=1e-6)


def test_agem_r_reference_batch_is_not_augmented_and_agems_is():
    """Mammoth's agem_r reads its memory without a transform (agem_r.py:47), agem with the
    training transform (agem.py:59): the projected step is against that batch's gradient."""
    model = models.MLP((8,), SC.num_classes)
    for module, shift in ((agem_r, 0.0), (agem, 0.5)):
        method = module.make(
            model=model, input_fn=shifted_input, buffer_size=16, minibatch_size=8, lr=0.1
        )
        state, step = first_task(method, steps=6)
        if module is agem:
            state = method.end_task(state, task(0), data(0), jax.random.key(2))
        b = batches(1)[0]
        new, _ = step(state, b, jax.random.key(5))
        k_cur, k_mem = jax.random.split(jax.random.key(5))
        if module is agem_r:  # agem_r's step splits the key once more
            k_cur, k_mem = jax.random.split(jax.random.split(jax.random.key(5))[0])
        idx, valid = buffer_lib.sample_indices(state.buffer, jax.random.split(k_mem)[0], 8)
        mem = buffer_lib.gather(state.buffer, idx)
        mem_x = SC.input_fn(mem["x"], None, False)  # plain; shifted by hand below
        params = state.net.params

        def ce(p, x, y, w=None):
            logits = model.apply({"params": p}, x)
            per = cross_entropy(logits, y)
            return per.mean() if w is None else jnp.sum(per * w) / jnp.sum(w)

        g = jax.grad(ce)(params, SC.input_fn(b["x"], None, False) + 0.5, b["y"])
        ref = jax.grad(ce)(params, mem_x + shift, mem["y"], valid)
        other = jax.grad(ce)(params, mem_x + 0.5 - shift, mem["y"], valid)
        want = jax.tree.map(lambda p, u: p - 0.1 * u, params, agem.project(g, ref))
        wrong = jax.tree.map(lambda p, u: p - 0.1 * u, params, agem.project(g, other))
        assert float(agem.tree_dot(g, ref)) < 0  # the projection is in play
        assert_trees_close(new.net.params, want, rtol=1e-5, atol=1e-6)
        assert trees_differ(new.net.params, wrong, atol=1e-6)


def test_gem_memory_passes_then_the_batch_move_the_running_statistics_in_that_order():
    """Mammoth's GEM: each stored task's memory, then the batch, in training mode
    (gem.py:134-146)."""
    model = TinyBN()
    method = gem.make(model=model, input_fn=SC.input_fn, buffer_size=8)
    state, step = train_first_task(method)
    b = batches(1)[0]
    new, _ = step(state, b, jax.random.key(5))
    stats = state.net.batch_stats
    _, stats = apply(model, state.net.params, stats, SC.input_fn(state.mem_x[0], None, True), True)
    _, stats = apply(model, state.net.params, stats, SC.input_fn(b["x"], None, True), True)
    assert_trees_close(new.net.batch_stats, stats, rtol=1e-5, atol=1e-6)


def fisher_by_hand(model, params, stats, xs, ys, train):
    """Mammoth's Fisher, item by item in the given order: `(F, statistics after)`."""

    @jax.jit
    def item(stats, x, y):
        def log_p(p):
            out, new = apply(model, p, stats, x[None], train)
            return -cross_entropy(out, y[None])[0], new

        (lp, stats), g = jax.value_and_grad(log_p, has_aux=True)(params)
        return jax.tree.map(lambda u: jnp.exp(lp) * u**2, g), stats

    total = jax.tree.map(jnp.zeros_like, params)
    for x, y in zip(xs, ys, strict=True):
        f_i, stats = item(stats, x, y)
        total = jax.tree.map(jnp.add, total, f_i)
    return jax.tree.map(lambda t: t / len(ys), total), stats


def test_ewc_fisher_is_mammoths_training_mode_pass_on_augmented_items():
    """Mammoth's oEWC (ewc_on.py:47-58): its shuffled train_loader (augmented), one item at a
    time in training mode, each moving the running statistics; fisher_mode="eval" and
    fisher_augment=False give inference mode on the plain items, the statistics unchanged."""
    model = TinyBN()
    x, y = data(0)
    k_order, _ = jax.random.split(jax.random.key(2))
    order = np.asarray(jax.random.permutation(k_order, y.shape[0]))
    for overrides, train, shift in (
        ({}, True, 0.5),
        ({"fisher_mode": "eval", "fisher_augment": False}, False, 0.0),
    ):
        method = ewc_on.make(model=model, input_fn=shifted_input, fisher_chunk=8, **overrides)
        before, _ = first_task(method)
        state = method.end_task(before, task(0), data(0), jax.random.key(2))
        idx = order if train else np.arange(y.shape[0])
        xs = SC.input_fn(x[idx], None, False) + shift
        want, stats = fisher_by_hand(
            model, before.net.params, before.net.batch_stats, xs, y[idx], train
        )
        assert_trees_close(state.fisher, want, rtol=1e-4, atol=1e-9)
        assert_trees_close(state.net.batch_stats, stats, rtol=1e-5, atol=1e-6)
        assert trees_differ(stats, before.net.batch_stats) == train
