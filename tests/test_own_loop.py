"""Every registered method, driven as a user drives it: a plain Python loop over tasks on the
user's own Flax model and own batches, every contract function called at every boundary
with no special cases, and the same loop under `jax.vmap` over seeds.

The loop is the one `cljax/methods/_contract.py` and the README show. Its model is the
user's own `UserNet` for every method that takes any classifier; `dyn_expand` (extractors
that take channel masks) and `pnn` (columns built from an MLP's widths) get the backbone
their module declares (`TEST_MODEL`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods
from cljax.methods import Method, Needs, TaskInfo
from tests.conftest import tiny_scenario
from tests.test_methods import TEST_MODELS

SC = tiny_scenario()
STEPS, BATCH = 3, 4


class UserNet(nn.Module):
    """A user's model: `apply({"params": ...}, x, train=...) -> logits`, or its features
    (the input of its last layer) with `num_classes=None`, which the methods that read
    features (hal, icarl, fdr...) ask of a model."""

    num_classes: int | None = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        h = nn.tanh(nn.Dense(8)(x.reshape((x.shape[0], -1))))
        return h if self.num_classes is None else nn.Dense(self.num_classes)(h)


def build(name) -> Method:
    module = methods.get(name)
    if hasattr(module, "TEST_MODEL"):
        model = TEST_MODELS[module.TEST_MODEL]()
    else:
        model = UserNet(SC.num_classes)
    return module.make(model=model, input_fn=SC.input_fn, **getattr(module, "TEST_CONFIG", {}))


def task_info(t) -> TaskInfo:
    seen = tuple(c for j in range(t + 1) for c in SC.classes(j))
    per_epoch = -(-SC.train_sizes[t] // BATCH)
    return TaskInfo(t, SC.classes(t), seen, per_epoch, STEPS, BATCH, 0, SC.num_tasks)


def own_batches(x, y, px, py, t):
    """The user's batches: the task's items and the method's pool, in the user's order."""
    xs = jnp.concatenate([jnp.asarray(x), px.astype(x.dtype)])
    ys = jnp.concatenate([jnp.asarray(y), py.astype(y.dtype)])
    order = np.random.default_rng(t).permutation(len(ys))[: STEPS * BATCH]
    return [{"x": xs[i], "y": ys[i]} for i in order.reshape(STEPS, BATCH)]


def own_loop(method: Method, key):
    """The whole contract, one seed: what a user's loop does."""
    x0 = SC.train(0)[0][:1]
    state = method.init(jax.random.fold_in(key, 0), x0)
    step = jax.jit(method.train_step)
    for t in range(SC.num_tasks):
        task, (x, y) = task_info(t), SC.train(t)
        k = jax.random.split(jax.random.fold_in(key, t + 1), 4)
        state = method.begin_task(state, task, k[0])
        state = method.begin_task_data(state, task, (x, y), k[1])
        px, py, valid = method.train_pool(state, x0)
        valid = np.asarray(valid)
        for i, b in enumerate(own_batches(x, y, px[valid], py[valid], t)):
            state, metrics = step(state, b, jax.random.fold_in(k[2], i))
        state = method.end_task(state, task, (x, y), k[3])
    return state, method.predict(state, jnp.asarray(SC.test(0)[0])), metrics


def vmapped_loop(method: Method, keys):
    """The same contract with every function vmapped over the seeds' states and keys (the
    task's data shared); the pool's count must agree across seeds to build one batch."""
    x0 = SC.train(0)[0][:1]
    state = jax.vmap(method.init, (0, None))(jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys), x0)
    step = jax.jit(jax.vmap(method.train_step, (0, None, 0)))
    for t in range(SC.num_tasks):
        task, (x, y) = task_info(t), SC.train(t)
        k = jax.vmap(lambda key, t=t: jax.random.split(jax.random.fold_in(key, t + 1), 4))(keys)
        begin = lambda s, kk, task=task: method.begin_task(s, task, kk)  # noqa: E731
        state = jax.vmap(begin)(state, k[:, 0])
        data = (jnp.asarray(x), jnp.asarray(y))
        on_data = lambda s, kk, task=task, data=data: method.begin_task_data(s, task, data, kk)  # noqa: E731
        state = jax.vmap(on_data)(state, k[:, 1])
        px, py, valid = jax.vmap(lambda s: method.train_pool(s, x0))(state)
        valid = np.asarray(valid[0])  # every seed's pool holds as many items here
        for i, b in enumerate(own_batches(x, y, px[0][valid], py[0][valid], t)):
            kk = jax.vmap(lambda key, i=i: jax.random.fold_in(key, i))(k[:, 2])
            state, metrics = step(state, b, kk)
        end = lambda s, kk, task=task, data=data: method.end_task(s, task, data, kk)  # noqa: E731
        state = jax.vmap(end)(state, k[:, 3])
    logits = jax.vmap(method.predict, (0, None))(state, jnp.asarray(SC.test(0)[0]))
    return state, logits, metrics


@pytest.mark.parametrize("name", methods.names())
def test_a_users_own_loop_runs_every_method(name):
    method = build(name)
    if method.host.resize is not None:
        pytest.skip(f"{name} resizes its state between tasks on the host (`host.resize`)")
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    state, logits, metrics = own_loop(method, keys[0])
    assert logits.shape == (len(SC.test(0)[1]), SC.num_classes)
    assert np.isfinite(float(metrics["loss"]))
    both, both_logits, both_metrics = vmapped_loop(method, keys)
    assert both_logits.shape == (2, *logits.shape)
    # seed 0 under vmap is seed 0 alone (the same functions, batched)
    np.testing.assert_allclose(both_logits[0], logits, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(both_metrics["loss"][0], metrics["loss"], rtol=2e-4, atol=2e-4)
    assert jax.tree.structure(both) == jax.tree.structure(state)


def test_a_boundary_function_given_as_none_is_the_identity():
    """A method written for the old contract (None where it does nothing) still gets
    callable functions; what is not callable is refused with the field's name."""
    old = build("sgd")._asdict() | {"begin_task": None, "end_task": None, "train_pool": None}
    method = Method(**old)
    assert method.begin_task("s", task_info(0), None) == "s"
    assert method.end_task("s", task_info(0), (None, None), None) == "s"
    assert method.train_pool("s", np.zeros((1, 6, 6)))[0].shape == (0, 6, 6)
    assert not method.does("end_task") and build("icarl").does("train_pool")
    with pytest.raises(TypeError, match="end_task must be callable"):
        Method(**(old | {"end_task": 3}))
    with pytest.raises(ValueError, match="protocol must be sequential or joint"):
        Method(**(old | {"needs": Needs(protocol="jointly")}))


def test_what_a_method_needs_travels_on_it():
    assert build("joint").needs.protocol == "joint"
    assert build("dgr").needs.last_batch == "fill"
    assert build("pnn").needs.settings == ("task-il",)
    icarl = build("icarl")
    state = icarl.init(jax.random.key(0), SC.train(0)[0][:1])
    assert icarl.train_pool(state, None)[2].shape == (icarl.needs.pool_capacity,)


@pytest.mark.parametrize("name", ["gdumb", "lucir", "bic", "icarl", "rpc", "er_ace"])
def test_methods_that_need_each_tasks_own_classes_refuse_domain_il(name):
    """As Mammoth's COMPATIBILITY: their memory, classifier or correction is per class of the
    task, and in a domain-IL benchmark every task has every class (they ran silently before:
    LUCIR 27% on two Perm-MNIST tasks)."""
    method = build(name)
    methods.check_scenario(method, "seq-mnist", ("class-il", "task-il"))
    with pytest.raises(ValueError, match=f"'{name}' can only be scored in class-il, task-il"):
        methods.check_scenario(method, "perm-mnist", ("domain-il",))


def test_task_info_never_leaves_the_past_classes_out():
    """A later task's TaskInfo without `seen` is refused (LwF would train without
    distillation, iCaRL divide by zero); the first task's defaults to its own classes."""
    assert TaskInfo(0, (0, 1)).seen == (0, 1)
    with pytest.raises(ValueError, match="give `seen`"):
        TaskInfo(1, (2, 3))
    task = TaskInfo.of(1, [(0, 1), (2, 3)], batch_size=4)
    assert task.seen == (0, 1, 2, 3) and task.classes == (2, 3) and task.num_tasks == 2
    assert task_info(1).seen == TaskInfo.of(1, [SC.classes(0), SC.classes(1)]).seen
