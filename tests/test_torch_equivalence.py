"""cljax's reduced ResNet-18 step for step against PyTorch (Mammoth's `backbone/ResNet18.py`,
rewritten with torch's own layers in `tests/torch_reference.py`).

From the same weights and batches: the logits (train and eval mode), BatchNorm's running
statistics, and 8 steps each of the `sgd`, `er` and `derpp` methods' `train_step` against
torch's SGD fed the same batches and the replay items cljax's buffer drew: every step's
loss, gradients, new parameters and statistics. At `nf` 4, 32x32x3 inputs, float32.
Then 8 steps over two class-incremental tasks (4 on classes 0-4, the boundary, 4 on 5-9)
of `der`, `lwf`, `icarl` and `ewc_on` beside Mammoth 5dc82be's `models/` written with
torch's primitives: DER's stored logits (torch keeps its own, in the slots cljax's
reservoir chose), LwF's warm-up of the head and its teacher's eval-mode logits, iCaRL's
eval-mode old network and herded exemplars, online EWC's item-by-item training-mode
Fisher, the statistics that pass leaves, and its penalty.

Discrepancies found and fixed in `cljax.models.backbones` (each guarded below): the running
variance (torch keeps the unbiased batch variance; `test_batchnorm_is_torchs_batchnorm2d`,
`test_forward_and_running_statistics_match_torch`) and the initialisation (torch's
kaiming_uniform(a=sqrt(5)) and uniform linear bias; `test_init_is_torchs_default`); ER's
and DER's (DER++'s) steps while the buffer holds fewer items than they replay, whose
weight-0 padding entered BatchNorm's batch statistics where Mammoth forwards the stored
items alone (`BatchNorm`'s `mask`; `test_er_step_with_fewer_stored_than_replayed_matches_torch`,
`test_der_step_with_fewer_stored_than_replayed_matches_torch`).

Batches whose ReLU inputs come within `MARGIN` of 0 are skipped (`clean_step`): float32
rounding may give such an input opposite signs in the two frameworks, and with few values
in a BatchNorm channel that one flip moves the channel's gradient by percents (measured:
an input of 7.7e-7 moved a layer-4 kernel's gradient by 4%).
"""

import copy
import functools
import itertools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed (pip install torch==2.13.0, as .ci/run does)"
)

from cljax import methods, models  # noqa: E402
from cljax.core import buffer as buffer_lib  # noqa: E402
from cljax.methods.common import mixed_batch, replay_batch  # noqa: E402
from cljax.models.backbones import BatchNorm  # noqa: E402
from tests import torch_reference as ref  # noqa: E402

NF, CLASSES, N = 4, 10, 8
LR = 0.1
TOL = dict(rtol=1e-4, atol=1e-5)  # float32, a dozen layers deep
MARGIN = 3e-6  # |ReLU input| below which a batch is skipped: ~3x the frameworks' rounding gap
MODEL = models.make("resnet18", CLASSES, nf=NF)
identity_input = lambda x, key, train: x  # the methods' input_fn: images used as they are


def images(seed, n=N):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
    return x, rng.integers(0, CLASSES, n).astype(np.int32)


def reference(seed=0):
    """A torch ResNet-18 at torch's init, its BatchNorm affine and running statistics
    moved off 1/0 so that the converter and eval mode are tested on telling values."""
    torch.manual_seed(seed)
    net = ref.ResNet18(CLASSES, NF)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net


def close(actual, expected, **tol):
    chex.assert_trees_all_close(
        jax.tree.map(np.asarray, actual), jax.tree.map(np.asarray, expected), **(tol or TOL)
    )


def _leaves(tree):
    """The arrays of `tree` in order, and their paths."""
    flat = jax.tree_util.tree_leaves_with_path(tree)
    return [np.asarray(x) for _, x in flat], [jax.tree_util.keystr(p) for p, _ in flat]


_eval = jax.jit(lambda v, x: MODEL.apply(v, x, train=False))
_train = jax.jit(lambda v, x: MODEL.apply(v, x, train=True, mutable=["batch_stats"]))


def clean_step(net, opt, torch_step, seeds):
    """`(seed, torch_step(seed))` for the first of `seeds` whose ReLU inputs in torch all lie
    at least `MARGIN` from 0; `net` and `opt` are restored after each rejected try.
    `torch_step` runs torch's side of one step on the batch of `seed`."""
    for seed in itertools.islice(seeds, 40):
        saved = copy.deepcopy((net.state_dict(), opt.state_dict()))
        with ref.relu_margins() as margins:
            out = torch_step(seed)
        if min(margins) >= MARGIN:
            return seed, out
        net.load_state_dict(saved[0])
        opt.load_state_dict(saved[1])
    raise AssertionError(f"40 batches in a row had a ReLU input within {MARGIN} of 0")


def _ce(logits, y):
    y = torch.as_tensor(np.array(y), dtype=torch.long)
    return torch.nn.functional.cross_entropy(logits, y)


def _sgd_step(net, opt, loss_fn) -> float:
    """One torch SGD step on `loss_fn()` in training mode; the loss."""
    net.train()
    opt.zero_grad()
    loss = loss_fn()
    loss.backward()
    opt.step()
    return float(loss.detach())


def test_converter_fills_every_variable_of_cljax_resnet18():
    shapes = jax.eval_shape(MODEL.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    converted = ref.to_cljax(reference())
    assert jax.tree.structure(converted) == jax.tree.structure(shapes)
    assert jax.tree.map(np.shape, converted) == jax.tree.map(lambda s: s.shape, shapes)


def test_init_is_torchs_default():
    """Mammoth's runs start from torch's default init: conv and linear weights
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform, a=sqrt(5)), the linear bias too,
    BatchNorm 1/0 with running statistics 0/1. (cljax had Flax's truncated LeCun normal and
    a zero bias.)"""
    variables = jax.jit(MODEL.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    torch.manual_seed(0)
    torch_vars = ref.to_cljax(ref.ResNet18(CLASSES, NF))
    for tree in (variables, torch_vars):
        scaled = []  # every weight times sqrt(fan_in): U(-1, 1)
        for path, w in jax.tree_util.tree_leaves_with_path(tree["params"]):
            name, w = jax.tree_util.keystr(path), np.asarray(w)
            if name.endswith("['kernel']"):
                fan_in = int(np.prod(w.shape[:-1]))
            elif "Dense" in name:  # the linear bias
                fan_in = tree["params"]["Dense_0"]["kernel"].shape[0]
            else:  # BatchNorm
                want = 1.0 if name.endswith("['scale']") else 0.0
                np.testing.assert_array_equal(w, want, err_msg=name)
                continue
            u = w * np.sqrt(fan_in)
            assert np.abs(u).max() <= 1 + 1e-6, name
            assert np.abs(u).max() > (0.5 if u.size < 20 else 0.9), name
            scaled.append(u.ravel())
        u = np.concatenate(scaled)
        assert abs(u.std() * np.sqrt(3) - 1) < 0.01 and abs(u.mean()) < 0.005
        for path, s in jax.tree_util.tree_leaves_with_path(tree["batch_stats"]):
            want = 0.0 if jax.tree_util.keystr(path).endswith("['mean']") else 1.0
            np.testing.assert_array_equal(s, want)


def test_batchnorm_is_torchs_batchnorm2d():
    """Momentum 0.1 (Flax's 0.9), eps 1e-5, the biased variance to normalise and the
    unbiased one (n / (n - 1)) in the running variance, where Flax's `nn.BatchNorm` keeps
    the biased one. n = 2 x 2 x 2 = 8 makes the factor 8/7."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2, 2, 2, 3)) * [1.0, 3.0, 0.1] + [0.0, 2.0, -1.0]).astype(np.float32)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    variables = {
        "params": {
            "scale": np.array([1.5, 0.5, 2.0], np.float32),
            "bias": np.array([0.1, -0.2, 0.3], np.float32),
        },
        "batch_stats": {"mean": np.zeros(3, np.float32), "var": np.ones(3, np.float32)},
    }
    for _ in range(2):  # two updates, so that the momentum shows
        y, updates = BatchNorm().apply(variables, x, train=True, mutable=["batch_stats"])
        variables = {**variables, **updates}
        bn.train()
        close(y, bn(ref.nchw(x)).detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)
    stats = variables["batch_stats"]
    close(stats, {"mean": bn.running_mean, "var": bn.running_var}, rtol=1e-6, atol=1e-7)
    bn.eval()
    y_eval = BatchNorm().apply(variables, x, train=False)
    close(y_eval, bn(ref.nchw(x)).detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [32, 7])
def test_strided_conv_padding_is_torchs(size):
    """A 3x3 stride-2 conv with `padding=1` pads one on each side, as torch (SAME would pad
    0 before and 1 after at even sizes); the 1x1 stride-2 shortcut takes the even pixels."""
    x, _ = images(1, 2)
    x = x[:, :size, :size]
    for k, pad in ((3, 1), (1, 0)):
        conv = torch.nn.Conv2d(3, 5, k, 2, padding=pad, bias=False)
        w = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
        flax_conv = nn.Conv(5, (k, k), 2, padding=pad, use_bias=False)
        out = flax_conv.apply({"params": {"kernel": w}}, x)
        close(out, conv(ref.nchw(x)).detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def test_forward_and_running_statistics_match_torch():
    net = reference()
    variables = ref.to_cljax(net)
    x, _ = images(0)
    net.eval()
    with torch.no_grad():
        eval_logits = net(ref.nchw(x)).numpy()
    close(_eval(variables, x), eval_logits)
    net.train()
    with torch.no_grad():
        train_logits = net(ref.nchw(x)).numpy()
    logits, updates = _train(variables, x)
    close(logits, train_logits)
    close(updates["batch_stats"], ref.to_cljax(net)["batch_stats"])


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 5e-4)])
def test_optimizer_is_torchs_sgd(momentum, weight_decay):
    """cljax's methods step with `optax.sgd(lr)`: Mammoth's default optimizer (torch's SGD,
    momentum 0, no weight decay). `dyn_expand` adds momentum and weight decay as
    `add_decayed_weights` then `sgd(lr, momentum)`: torch's `SGD(momentum, weight_decay)`.
    Three steps on a linear layer (the optimizer does not see the network)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 3)
    opt = torch.optim.SGD(linear.parameters(), LR, momentum=momentum, weight_decay=weight_decay)
    params = {
        "w": linear.weight.detach().numpy().T.copy(),
        "b": linear.bias.detach().numpy().copy(),
    }
    tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(LR, momentum or None))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        logits = lambda p: x @ p["w"] + p["b"]
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(logits(p), y).mean()
        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = rng.normal(size=(5, 6)).astype(np.float32), rng.integers(0, 3, 5)
        opt.zero_grad()
        _ce(linear(torch.from_numpy(x)), y).backward()
        opt.step()
        params, opt_state = step(params, opt_state, x, y)
        torch_params = {"w": linear.weight.detach().numpy().T, "b": linear.bias.detach().numpy()}
        close(params, torch_params, rtol=1e-6, atol=1e-7)


def _continue_from(state, net):
    """`state` with its network holding `net`'s weights and statistics."""
    v = jax.tree.map(jnp.asarray, ref.to_cljax(net))
    params, stats = v["params"], v["batch_stats"]
    net_state = state.net.replace(
        params=params, batch_stats=stats, opt_state=state.net.tx.init(params)
    )
    return state.replace(net=net_state)


def _start(method, net):
    """`method`'s initial state with its network holding `net`'s weights and statistics.
    Built from `init`'s shapes with every array 0, which is what `init` gives the rest of
    the `sgd`, `er`, `der` and `derpp` states (step count, empty buffer): an eager ResNet
    `init` takes seconds. (`lwf`'s teacher, `icarl`'s and `ewc_on`'s anchor, copies of the
    weights in `init`, are 0 here: unread until the boundary functions set them.)"""
    shapes = jax.eval_shape(method.init, jax.random.key(0), images(0, 1)[0])
    zeros = jax.tree.map(lambda s: jnp.asarray(np.zeros(s.shape, s.dtype)), shapes)
    return _continue_from(zeros, net)


def _check_steps(train_step, state, net, torch_step, steps=8, batch=None, first=100, after=None):
    """`steps` steps of a method's jitted `train_step` from `state` beside
    `torch_step(opt, state, batch, key)` (torch's SGD on the step's batch and on the replayed
    items it reads from cljax's `state` with the step's key). `batch(seed)` gives the
    step's batch (numpy; `images(seed)` by default; keys other than x and y go to torch
    alone), tried from seed `first` on; `after(state)`, if given, runs after each step
    with cljax's new state (the torch side keeps what the step stored there, and checks
    it). After every step the loss, the new parameters and statistics, and the gradient
    (each parameter's change over the step divided by -lr: within 1e-4 of the largest
    |gradient| in its array, plus that division's float32 rounding) agree. The next
    step starts both from torch's weights (the buffer and all else stay cljax's own), so
    that the float32 gap, ~1e-6 of the weights a step, cannot pile up to the ReLU margin:
    left to run, the two part after 5-10 steps (a ReLU input flips sign, then others do).
    """
    opt = torch.optim.SGD(net.parameters(), LR)
    batch = batch or (lambda seed: dict(zip(("x", "y"), images(seed), strict=True)))
    step = lambda seed: torch_step(
        opt, state, batch(seed), jax.random.key(seed)
    )  # this step's state
    seeds = itertools.count(first)
    for _ in range(steps):
        state = _continue_from(state, net)
        before = ref.to_cljax(net)["params"]
        seed, torch_loss = clean_step(net, opt, step, seeds)
        xy = {k: jnp.asarray(batch(seed)[k]) for k in ("x", "y")}
        state, metrics = train_step(state, xy, jax.random.key(seed))
        np.testing.assert_allclose(float(metrics["loss"]), torch_loss, rtol=1e-5)
        close({"params": state.net.params, "batch_stats": state.net.batch_stats}, ref.to_cljax(net))
        # the gradient: each parameter's change over the step / -lr (float32: ulp(p) / lr)
        ours, names = _leaves(state.net.params)
        torch_grads, _ = _leaves(ref.grads_to_cljax(net))
        for name, p1, p0, g in zip(names, ours, _leaves(before)[0], torch_grads, strict=True):
            atol = 1e-4 * np.abs(g).max() + 2 * np.spacing(np.abs(p0).max()) / LR
            np.testing.assert_allclose((p0 - p1) / LR, g, rtol=0, atol=atol, err_msg=name)
        if after is not None:
            after(state)
    return state


def test_sgd_method_matches_torch_for_8_steps():
    method = methods.get("sgd").make(model=MODEL, input_fn=identity_input, lr=LR)
    net = reference()
    torch_step = lambda opt, state, batch, key: ref.ce_step(net, opt, batch["x"], batch["y"])
    _check_steps(jax.jit(method.train_step), _start(method, net), net, torch_step)


REPLAYED = 4  # minibatch_size of the replay methods here
er_draw = jax.jit(  # ER's batch as its train_step draws it (keys split as there)
    lambda state, batch, key: mixed_batch(
        state, batch, *jax.random.split(key, 3)[:2], REPLAYED, identity_input
    )
)


ER = methods.get("er").make(
    model=MODEL, input_fn=identity_input, lr=LR, buffer_size=16, minibatch_size=REPLAYED
)
er_step = jax.jit(ER.train_step)


def er_torch_step(net):
    """Mammoth's ER.observe beside cljax's step: one forward pass of the batch and the
    replayed items."""

    def torch_step(opt, state, batch, key):
        x, y, weight = er_draw(state, batch, key)
        assert np.all(np.asarray(weight) == 1)
        return _sgd_step(net, opt, lambda: _ce(net(ref.nchw(x)), y))

    return torch_step


def test_er_matches_torch_for_8_steps():
    """Mammoth's ER: CE over the batch and 4 replayed items in one forward pass (the items
    cljax's buffer drew at the step, read back from its state). The buffer starts with 8
    items, so that every step replays 4 distinct ones (the empty buffer: next test)."""
    net = reference()
    state = _start(ER, net)
    x, y = images(1)
    state = state.replace(buffer=buffer_lib.add(state.buffer, {"x": x, "y": y}, jax.random.key(1)))
    _check_steps(er_step, state, net, er_torch_step(net))


@pytest.mark.parametrize("stored", [0, 2])
def test_er_step_with_fewer_stored_than_replayed_matches_torch(stored):
    """The batch with `stored` < minibatch_size buffer items: Mammoth's ER forwards the
    batch alone (empty buffer) or with the stored items; cljax's forwards minibatch_size
    slots, whose weight-0 padding stays out of BatchNorm's statistics (`forward`'s
    `weight`, the backbone's `mask`). Failed before that (the padding entered them)."""
    net = reference()
    opt = torch.optim.SGD(net.parameters(), LR)
    state = _start(ER, net)
    x, y = images(1, stored)
    state = state.replace(buffer=buffer_lib.add(state.buffer, {"x": x, "y": y}, jax.random.key(1)))
    batch = dict(zip(("x", "y"), map(jnp.asarray, images(3)), strict=True))
    x_all, y_all, weight = er_draw(state, batch, jax.random.key(3))
    assert int(np.sum(weight)) == N + stored  # the batch and the `stored` distinct items
    keep = np.asarray(weight) == 1
    torch_loss = _sgd_step(net, opt, lambda: _ce(net(ref.nchw(x_all[keep])), y_all[keep]))
    state, metrics = er_step(state, batch, jax.random.key(3))
    np.testing.assert_allclose(float(metrics["loss"]), torch_loss, rtol=1e-5)


ALPHA, BETA = 0.5, 0.5
derpp_draws = jax.jit(  # DER++'s two replay draws as its train_step makes them
    lambda state, key: [
        replay_batch(state, k, REPLAYED, identity_input) for k in jax.random.split(key, 4)[1:3]
    ]
)


def test_derpp_matches_torch_for_8_steps():
    """Mammoth's DER++ observe: CE(f(x), y) + alpha * MSE(f(x'), z') + beta * CE(f(x''), y'')
    in three forward passes in that order, the replay terms only once the buffer holds
    items; z' are the logits cljax's buffer stored (its training-mode logits)."""
    method = methods.get("derpp").make(
        model=MODEL,
        input_fn=identity_input,
        lr=LR,
        buffer_size=16,
        minibatch_size=REPLAYED,
        alpha=ALPHA,
        beta=BETA,
    )
    net = reference()

    def torch_step(opt, state, batch, key):
        (mse_x, mse, mse_valid), (ce_x, ce, ce_valid) = derpp_draws(state, key)

        def loss():
            loss = _ce(net(ref.nchw(batch["x"])), batch["y"])
            if int(state.buffer.num_seen) > 0:
                assert np.all(np.asarray(mse_valid) == 1) and np.all(np.asarray(ce_valid) == 1)
                z = torch.from_numpy(np.array(mse["logits"]))
                loss = loss + ALPHA * torch.nn.functional.mse_loss(net(ref.nchw(mse_x)), z)
                loss = loss + BETA * _ce(net(ref.nchw(ce_x)), ce["y"])
            return loss

        return _sgd_step(net, opt, loss)

    _check_steps(jax.jit(method.train_step), _start(method, net), net, torch_step)


# --- Two tasks: the methods whose boundary matters (der, lwf, icarl, ewc_on) ---------------

TASKS = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))  # class-incremental, two tasks of five classes
PER_TASK = 20  # training items of a task (4 a class)
F = torch.nn.functional


def task_info(t, **facts):
    return methods.TaskInfo.of(t, TASKS, **facts)


def task_data(t):
    """Task `t`'s training data: `PER_TASK` images, 4 of each of its classes, shuffled."""
    rng = np.random.default_rng(10 + t)
    x = rng.normal(size=(PER_TASK, 32, 32, 3)).astype(np.float32)
    y = rng.permutation(np.repeat(TASKS[t], PER_TASK // len(TASKS[t]))).astype(np.int32)
    return x, y


def drawn_from(x, y):
    """`batch(seed)`: `N` distinct items of `(x, y)` drawn by `seed`, with their indices."""

    def batch(seed):
        idx = np.random.default_rng(seed).choice(len(y), N, replace=False)
        return {"x": x[idx], "y": y[idx], "idx": idx}

    return batch


def fresh(t):
    """`batch(seed)`: `N` new images (`images(seed)`'s) labelled with task `t`'s classes."""

    def batch(seed):
        y = np.random.default_rng(seed).choice(TASKS[t], N).astype(np.int32)
        return {"x": images(seed)[0], "y": y}

    return batch


def l2(net):
    """Mammoth's `wd_reg` term without its weight: `sum(net.get_params() ** 2)`."""
    return sum((p**2).sum() for p in net.parameters())


DER = methods.get("der").make(
    model=MODEL, input_fn=identity_input, lr=LR, buffer_size=16, minibatch_size=REPLAYED, alpha=1.0
)
der_step = jax.jit(DER.train_step)


@jax.jit
def der_draws(state, key):
    """The slots DER's step replays and the slots the batch's items go to (keys split as
    `common.dark_step` and `replay_batch` split them)."""
    _, k_mse, _, k_add = jax.random.split(key, 4)
    idx, valid = buffer_lib.sample_indices(state.buffer, jax.random.split(k_mse)[0], REPLAYED)
    slots = buffer_lib.reservoir_slots(state.buffer.num_seen, N, state.buffer.capacity, k_add)
    return idx, valid, slots


def test_der_matches_torch_for_8_steps_across_a_task_boundary():
    """Mammoth's DER observe: CE(f(x), y) + alpha * MSE(f(x'), z') in two training-mode
    forward passes, the replay term once the buffer holds items, then the batch offered to
    the reservoir with `outputs.data` (its training-mode logits before the update). The
    torch side keeps a buffer of its own (its logits, in the slots cljax's reservoir
    chose) and replays from it the slots cljax drew, so that the logits cljax stored are
    checked twice: against torch's after every step and through the loss when replayed.
    Task 0 (classes 0-4) for 4 steps fills the 16 slots; task 1 (5-9) for 4 steps replays
    them (DER has no boundary function: only the stored logits cross it)."""
    net = reference()
    state = _start(DER, net)
    stored = {"x": np.zeros((16, 32, 32, 3), np.float32), "z": np.zeros((16, CLASSES), np.float32)}
    pending = {}

    def torch_step(opt, state, batch, key):
        idx, valid, slots = map(np.asarray, der_draws(state, key))

        def loss():
            out = net(ref.nchw(batch["x"]))
            loss = _ce(out, batch["y"])
            if int(state.buffer.num_seen) > 0:
                assert np.all(valid)
                replayed = net(ref.nchw(stored["x"][idx]))
                loss = loss + 1.0 * F.mse_loss(replayed, torch.from_numpy(stored["z"][idx]))
            pending.update(slots=slots, x=batch["x"], z=ref._np(out))
            return loss

        return _sgd_step(net, opt, loss)

    def after(state):  # the accepted step's items into torch's buffer; cljax's stored the same
        keep = pending["slots"] < 16
        for key in ("x", "z"):
            stored[key][pending["slots"][keep]] = pending[key][keep]
        filled = min(int(state.buffer.num_seen), 16)
        np.testing.assert_array_equal(state.buffer.data["x"][:filled], stored["x"][:filled])
        close(state.buffer.data["logits"][:filled], stored["z"][:filled])

    for t in range(2):
        state = _check_steps(der_step, state, net, torch_step, 4, fresh(t), 100 + 100 * t, after)
    assert int(state.buffer.num_seen) == 8 * N


@pytest.mark.parametrize("stored", [2, 3])
def test_der_step_with_fewer_stored_than_replayed_matches_torch(stored):
    """2 or 3 stored items replayed as 4 slots (a, b, a, b / a, b, c, a), the repeats at
    weight 0: Mammoth's DER forwards the distinct items alone (models/der.py:37-41,
    utils/buffer.py:96-100). Before the backbone's `mask`, the repeats entered BatchNorm's
    statistics: the running variance's n / (n - 1) counted 4 items, and with 3 stored the
    loss moved 0.23%."""
    net = reference()
    opt = torch.optim.SGD(net.parameters(), LR)
    state = _start(DER, net)
    x, y = images(1, stored)
    z = np.random.default_rng(2).normal(size=(stored, CLASSES)).astype(np.float32)
    items = {"x": x, "y": y, "logits": z}
    state = state.replace(buffer=buffer_lib.add(state.buffer, items, jax.random.key(1)))
    batch = dict(zip(("x", "y"), map(jnp.asarray, images(3)), strict=True))
    idx, valid, _ = map(np.asarray, der_draws(state, jax.random.key(3)))
    assert valid.sum() == stored  # the stored items, then repeats
    replayed = idx[valid]

    def loss():
        loss = _ce(net(ref.nchw(batch["x"])), batch["y"])
        out = net(ref.nchw(x[replayed]))
        return loss + 1.0 * F.mse_loss(out, torch.from_numpy(z[replayed]))

    torch_loss = _sgd_step(net, opt, loss)
    state, metrics = der_step(state, batch, jax.random.key(3))
    np.testing.assert_allclose(float(metrics["loss"]), torch_loss, rtol=1e-5)
    close({"params": state.net.params, "batch_stats": state.net.batch_stats}, ref.to_cljax(net))


LWF = dict(alpha=1.0, softmax_temp=2.0, wd_reg=5e-4)


def lwf_warm_up(net, x, y, orders, batch_size, classes):
    """Mammoth's LwF warm-up (5dc82be `models/lwf.py:51-78`): the network in eval mode, the
    linear head alone trained by SGD at lr on CE over the task's classes (features under
    no_grad), in `orders` (cljax's epochs' shuffles); then, still in eval mode, the logits
    of every training item (the un-augmented ones) kept as the task's targets."""
    net.eval()
    head_opt = torch.optim.SGD(net.linear.parameters(), LR)
    lo, hi = min(classes), max(classes) + 1
    for order in orders:
        for b in (order[i : i + batch_size] for i in range(0, len(order), batch_size)):
            head_opt.zero_grad()
            with torch.no_grad():
                feats = net.features(ref.nchw(x[b]))
            out = net.linear(feats)[:, lo:hi]
            F.cross_entropy(out, torch.as_tensor(y[b] - lo, dtype=torch.long)).backward()
            head_opt.step()
    with torch.no_grad():
        logits = net(ref.nchw(x))
    net.train()
    return logits


def lwf_smooth(p, temp):
    """Mammoth's `smooth`: `p ** (1 / temp)` renormalised along the classes."""
    p = p ** (1 / temp)
    return p / p.sum(1, keepdim=True)


def test_lwf_matches_torch_for_8_steps_across_a_task_boundary():
    """Mammoth's LwF (5dc82be `models/lwf.py`): task 0 for 4 steps of CE over its classes
    + wd_reg * |theta|^2; at task 1's start the warm-up of the head (2 epochs of batches of
    8, 8 and 4, in the order cljax's `begin_task_data` shuffled) and the teacher's logits
    (eval mode, kept for the task); then 4 steps of CE over the seen classes + alpha * the
    smoothed KD (temperature 2) on the past classes against those stored logits + wd_reg *
    |theta|^2. The warm-up's head, the teacher's logits and every step are compared."""
    method = methods.get("lwf").make(model=MODEL, input_fn=identity_input, lr=LR, **LWF)
    net = reference()
    state = _start(method, net)
    step = jax.jit(method.train_step)

    @functools.partial(jax.jit, static_argnums=1)
    def warm_up(state, info, data, key):
        """`begin_task_data`, and its epochs' shuffles (keys split as `lwf.warm_up` does)."""
        orders = [
            jax.random.permutation(jax.random.split(k)[0], PER_TASK)
            for k in jax.random.split(key, info.epochs)
        ]
        return method.begin_task_data(state, info, data, key), orders

    targets = {}

    def torch_step(opt, state, batch, key):
        seen, past = targets["seen"], targets["past"]

        def loss():
            out = net(ref.nchw(batch["x"]))
            loss = _ce(out[:, :seen], batch["y"])
            if past:
                old = lwf_smooth(F.softmax(targets["logits"][batch["idx"]][:, :past], 1), 2)
                new = lwf_smooth(F.softmax(out[:, :past], 1), 2)
                loss = loss + LWF["alpha"] * -torch.mean(torch.sum(old * torch.log(new), 1))
            return loss + LWF["wd_reg"] * l2(net)

        return _sgd_step(net, opt, loss)

    for t in range(2):
        info = task_info(t, batch_size=N, epochs=2)  # batches of 8, 8, 4: a partial one
        x, y = task_data(t)
        key = jax.random.key(50 + t)
        state = _continue_from(method.begin_task(state, info, key), net)
        state, orders = warm_up(state, info, (jnp.asarray(x), jnp.asarray(y)), key)
        targets.update(seen=5 * (t + 1), past=5 * t)
        if t > 0:
            orders = [np.asarray(order) for order in orders]
            targets["logits"] = lwf_warm_up(net, x, y, orders, info.batch_size, TASKS[t])
            close(
                {"params": state.net.params, "batch_stats": state.net.batch_stats},
                ref.to_cljax(net),
            )
            teacher = {"params": state.teacher, "batch_stats": state.teacher_stats}
            for i in (0, 8, PER_TASK - N):  # N at a time: the program `_eval` has compiled
                close(_eval(teacher, x[i : i + N]), targets["logits"][i : i + N])
        state = _check_steps(step, state, net, torch_step, 4, drawn_from(x, y), 100 + 100 * t)


ICARL = dict(buffer_size=10, wd_reg=5e-4, normalize=False)  # Mammoth's herding: raw features


def icarl_herding(net, x, y, m):
    """Mammoth's iCaRL `fill_buffer` of the first task (5dc82be `models/icarl.py:155-223`):
    eval-mode features of the task's un-augmented items; per class, in label order, `m`
    picks minimising `|mean - (f + running_sum) / (i + 1)|`, each pick's feature then
    pushed 1e6 away. The indices picked, in that order."""
    net.eval()
    with torch.no_grad():
        feats = net.features(ref.nchw(x))
    chosen = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        f = feats[members].clone()
        mean = f.mean(0, keepdim=True)
        running = torch.zeros_like(mean)
        for i in range(min(m, len(members))):
            j = int((mean - (f + running) / (i + 1)).norm(2, 1).argmin())
            chosen.append(members[j])
            running += f[j : j + 1]
            f[j] = f[j] + 1e6
    net.train()
    return np.array(chosen)


def test_icarl_matches_torch_for_8_steps_across_a_task_boundary():
    """Mammoth's iCaRL (5dc82be `models/icarl.py`): task 0 for 4 steps of the sigmoid BCE
    with logits over its classes against one-hot targets + wd_reg * |theta|^2; its
    `end_task`: the old network a copy in eval mode (`deepcopy(self.net.eval())`) and the
    exemplars by herding (`normalize=False`, Mammoth's); task 1 for 4 steps on its items
    and the exemplars, the targets of the past classes the old network's sigmoid on the
    batch. The exemplars (which items, in which order) and every step are compared."""
    method = methods.get("icarl").make(model=MODEL, input_fn=identity_input, lr=LR, **ICARL)
    net = reference()
    state = _start(method, net)
    step = jax.jit(method.train_step)
    end_task = jax.jit(method.end_task, static_argnums=1)
    eye = torch.eye(CLASSES)
    old = {}

    def torch_step(opt, state, batch, key):
        seen, past = old["seen"], old["past"]
        x, y = ref.nchw(batch["x"]), torch.as_tensor(batch["y"], dtype=torch.long)

        def loss():
            targets = eye[y][:, :seen]
            if past:
                with torch.no_grad():
                    logits = torch.sigmoid(old["net"](x))
                targets = torch.cat([logits[:, :past], targets[:, past:]], 1)
            out = net(x)[:, :seen]
            return F.binary_cross_entropy_with_logits(out, targets) + ICARL["wd_reg"] * l2(net)

        return _sgd_step(net, opt, loss)

    x, y = task_data(0)
    info = task_info(0, batch_size=N, epochs=1)
    state = method.begin_task(state, info, jax.random.key(60))
    old.update(seen=5, past=0)
    state = _check_steps(step, state, net, torch_step, 4, drawn_from(x, y), 100)

    state = end_task(
        _continue_from(state, net), info, (jnp.asarray(x), jnp.asarray(y)), jax.random.key(61)
    )
    old["net"] = copy.deepcopy(net).eval()
    chosen = icarl_herding(net, x, y, ICARL["buffer_size"] // 5)
    memory = state.memory
    slots = np.flatnonzero(memory.valid)
    slots = slots[np.lexsort((memory.rank[slots], memory.y[slots]))]  # by class, then rank
    np.testing.assert_array_equal(memory.x[slots], x[chosen])
    np.testing.assert_array_equal(memory.y[slots], y[chosen])
    close({"params": state.teacher, "batch_stats": state.teacher_stats}, ref.to_cljax(net))

    x1, y1 = task_data(1)
    pool_x, pool_y, valid = map(np.asarray, method.train_pool(state))
    pool = (np.concatenate([x1, pool_x[valid]]), np.concatenate([y1, pool_y[valid]]))
    info = task_info(1, batch_size=N, epochs=1)
    state = method.begin_task(state, info, jax.random.key(62))
    old.update(seen=10, past=5)
    _check_steps(step, state, net, torch_step, 4, drawn_from(*pool), 200)


EWC = dict(e_lambda=1000.0, gamma=0.8)  # the penalty ~0.5% of a step's change; gamma < 1 shows


def single_item_clean(net, x):
    """The items of `x` whose ReLU inputs all lie `MARGIN` from 0 when forwarded alone in
    training mode (the Fisher's pass), on a copy of `net` (its statistics kept)."""
    probe = copy.deepcopy(net).train()
    keep = []
    for i in range(len(x)):
        with ref.relu_margins() as margins, torch.no_grad():
            probe(ref.nchw(x[i : i + 1]))
        keep.append(min(margins) >= MARGIN)
    return np.array(keep)


def ewc_fisher(net, x, y, order):
    """Mammoth's online-EWC `end_task` pass (5dc82be `models/ewc_on.py:44-68`), the network
    in training mode: for each item alone, in `order`, `exp(log p(y|x))` (detached) times
    the squared gradient of `log p(y|x)`, summed and divided by the items' count (Mammoth's
    `len(train_loader) * batch_size`, the same with one full batch); the running BatchNorm
    statistics move with each item."""
    net.train()
    fish = {name: torch.zeros_like(p) for name, p in net.named_parameters()}
    for i in order:
        net.zero_grad()
        out = net(ref.nchw(x[i : i + 1]))
        loss = -F.nll_loss(
            F.log_softmax(out, 1), torch.as_tensor(y[i : i + 1], dtype=torch.long), reduction="none"
        )
        exp_cond_prob = torch.mean(torch.exp(loss.detach().clone()))
        torch.mean(loss).backward()
        for name, p in net.named_parameters():
            fish[name] += exp_cond_prob * p.grad**2
    return {name: f / len(order) for name, f in fish.items()}


def test_ewc_on_matches_torch_for_8_steps_across_a_task_boundary():
    """Mammoth's online EWC (5dc82be `models/ewc_on.py`), `fisher_mode="train"` (its pass):
    task 0 for 4 steps of CE; its `end_task` (the Fisher of the item-by-item training-mode
    pass in the order cljax shuffled, the running statistics it moves, the anchor); task 1
    for 4 steps of CE + e_lambda * sum F (theta - theta*)^2 (the loss compared is the CE:
    cljax reports it alone, as its docstring says); task 1's `end_task`: gamma F_0 + F_1.
    The Fisher is taken on the first 16 of the task's 20 items whose lone forward pass has
    no ReLU input within `MARGIN` of 0, since every item's gradient counts."""
    method = methods.get("ewc_on").make(model=MODEL, input_fn=identity_input, lr=LR, **EWC)
    net = reference()
    state = _start(method, net)
    step = jax.jit(method.train_step)

    @jax.jit
    def end_task(state, data, key):
        """`end_task`, and the order its pass takes the items in (keys split as
        `ewc_on.fisher` does). ewc_on's reads nothing of the task (Mammoth's neither): one
        program for both boundaries."""
        order = jax.random.permutation(jax.random.split(key)[0], data[1].shape[0])
        return method.end_task(state, task_info(0), data, key), order

    ewc = {"fisher": None}

    def torch_step(opt, state, batch, key):
        def loss():
            ce = _ce(net(ref.nchw(batch["x"])), batch["y"])
            ewc["ce"] = float(ce.detach())
            if ewc["fisher"] is None:
                return ce
            penalty = sum(
                (ewc["fisher"][n] * (p - ewc["anchor"][n]) ** 2).sum()
                for n, p in net.named_parameters()
            )
            return ce + EWC["e_lambda"] * penalty

        _sgd_step(net, opt, loss)
        return ewc["ce"]

    for t in range(2):
        x, y = task_data(t)
        info = task_info(t, batch_size=N, epochs=1)
        state = method.begin_task(state, info, jax.random.key(70))
        state = _check_steps(step, state, net, torch_step, 4, drawn_from(x, y), 100 + 100 * t)
        state = _continue_from(state, net)
        keep = np.flatnonzero(single_item_clean(net, x))[:16]
        assert len(keep) == 16
        x, y = x[keep], y[keep]
        key = jax.random.key(71 + t)
        state, order = end_task(state, (jnp.asarray(x), jnp.asarray(y)), key)
        anchor = {n: p.detach().clone() for n, p in net.named_parameters()}
        fisher = ewc_fisher(net, x, y, np.asarray(order))
        if ewc["fisher"] is not None:
            fisher = {n: EWC["gamma"] * ewc["fisher"][n] + f for n, f in fisher.items()}
        ewc.update(fisher=fisher, anchor=anchor)
        close(state.anchor, ref.params_to_cljax(net, anchor), rtol=0, atol=0)
        close(state.net.batch_stats, ref.to_cljax(net)["batch_stats"])
        ours, names = _leaves(state.fisher)
        theirs, _ = _leaves(ref.params_to_cljax(net, fisher))
        for name, a, b in zip(names, ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max(), err_msg=name)
