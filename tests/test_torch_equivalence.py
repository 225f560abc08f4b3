"""cljax's reduced ResNet-18 step for step against PyTorch (Mammoth's `backbone/ResNet18.py`,
rewritten with torch's own layers in `tests/torch_reference.py`).

From the same weights and batches: the logits (train and eval mode), BatchNorm's running
statistics, and 8 steps each of the `sgd`, `er` and `derpp` methods' `train_step` against
torch's SGD fed the same batches and the replay items cljax's buffer drew: every step's
loss, gradients, new parameters and statistics. At `nf` 4, 32x32x3 inputs, float32.

Discrepancies found and fixed in `cljax.models.backbones` (each guarded below): the running
variance (torch keeps the unbiased batch variance; `test_batchnorm_is_torchs_batchnorm2d`,
`test_forward_and_running_statistics_match_torch`) and the initialisation (torch's
kaiming_uniform(a=sqrt(5)) and uniform linear bias; `test_init_is_torchs_default`). Found
and not fixed here (an xfail): ER's steps while its buffer holds fewer items than it replays.

Batches whose ReLU inputs come within `MARGIN` of 0 are skipped (`clean_step`): float32
rounding may give such an input opposite signs in the two frameworks, and with few values
in a BatchNorm channel that one flip moves the channel's gradient by percents (measured:
an input of 7.7e-7 moved a layer-4 kernel's gradient by 4%).
"""

import copy
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
    the `sgd`, `er` and `derpp` states (step count, empty buffer): an eager ResNet `init`
    takes seconds."""
    shapes = jax.eval_shape(method.init, jax.random.key(0), images(0, 1)[0])
    zeros = jax.tree.map(lambda s: jnp.asarray(np.zeros(s.shape, s.dtype)), shapes)
    return _continue_from(zeros, net)


def _check_steps(train_step, state, net, torch_step, steps=8):
    """`steps` steps of a method's jitted `train_step` from `state` beside
    `torch_step(opt, state, batch, key)` (torch's SGD on the step's batch and on the replayed
    items it reads from cljax's `state` with the step's key). After every step the loss,
    the new parameters and statistics, and the gradient (each parameter's change over the
    step divided by -lr: within 1e-4 of the largest |gradient| in its array, plus that
    division's float32 rounding) agree. The next
    step starts both from torch's weights (the buffer and all else stay cljax's own), so
    that the float32 gap, ~1e-6 of the weights a step, cannot pile up to the ReLU margin:
    left to run, the two part after 5-10 steps (a ReLU input flips sign, then others do).
    """
    opt = torch.optim.SGD(net.parameters(), LR)
    batch = lambda seed: dict(zip(("x", "y"), map(jnp.asarray, images(seed)), strict=True))
    step = lambda seed: torch_step(
        opt, state, batch(seed), jax.random.key(seed)
    )  # this step's state
    seeds = itertools.count(100)
    for _ in range(steps):
        state = _continue_from(state, net)
        before = ref.to_cljax(net)["params"]
        seed, torch_loss = clean_step(net, opt, step, seeds)
        state, metrics = train_step(state, batch(seed), jax.random.key(seed))
        after = ref.to_cljax(net)
        np.testing.assert_allclose(float(metrics["loss"]), torch_loss, rtol=1e-5)
        close({"params": state.net.params, "batch_stats": state.net.batch_stats}, after)
        # the gradient: each parameter's change over the step / -lr (float32: ulp(p) / lr)
        ours, names = _leaves(state.net.params)
        torch_grads, _ = _leaves(ref.grads_to_cljax(net))
        for name, p1, p0, g in zip(names, ours, _leaves(before)[0], torch_grads, strict=True):
            atol = 1e-4 * np.abs(g).max() + 2 * np.spacing(np.abs(p0).max()) / LR
            np.testing.assert_allclose((p0 - p1) / LR, g, rtol=0, atol=atol, err_msg=name)
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


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="cljax's ER (common.mixed_batch) forwards the current batch together with "
    "minibatch_size replay slots while the buffer holds fewer items: the weight-0 padding "
    "(empty slots, or repeats) enters BatchNorm's batch statistics; Mammoth's ER forwards "
    "the batch alone (empty buffer) or with min(size, minibatch_size) distinct items",
)
@pytest.mark.parametrize("stored", [0, 2])
def test_er_step_with_fewer_stored_than_replayed_matches_torch(stored):
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
