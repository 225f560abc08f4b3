"""Generative replay (DGR, MeRGAN): replay is real, GAN pieces behave."""

import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax import methods, models, train, tuned
from cljax.benchmarks import scenarios
from cljax.methods import generative
from cljax.methods.scholar import solver_step
from cljax.models import gan
from cljax.run import evaluate as evaluation


def pattern_scenario(per_class=64, seed=0):
    """4 classes of 8x8 images, class k lights one quadrant; 2 tasks of 2 classes."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.repeat(np.arange(4), n).astype(np.int32)
        x = rng.integers(0, 40, (len(y), 8, 8))
        for k in range(4):
            r, c = divmod(k, 2)
            x[y == k, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 200
        return x.astype(np.uint8), y

    arrays = (*make(per_class), *make(16))
    return scenarios.class_incremental("patterns", arrays, 2, scenarios.scaled_input(255.0), "mlp")


SC = pattern_scenario()
FAST = dict(n_critic=2, g_lr=1e-3, d_lr=1e-3, lr=1e-2, z_dim=16)


def quadrant_oracle(x):
    """Logits of a perfect classifier of `pattern_scenario`: each quadrant's brightness."""
    return x.reshape(x.shape[0], 2, 4, 2, 4).mean((2, 4)).reshape(x.shape[0], 4)


def run(name, after_task=None, **extra):
    method = methods.get(name).make(
        model=models.MLP((32,), SC.num_classes), input_fn=SC.input_fn, **FAST, **extra
    )
    config = train.RunConfig(
        seeds=(0,), batch_size=32, steps=150, progress=False, chunks_per_task=1
    )
    res = train.run(method, SC, config, after_task=after_task and after_task(method))
    return np.asarray(res["accuracy"]["class-il"], float)[0], res


def generated_task1_accuracy(method):
    """`after_task`: the oracle's accuracy on generated samples of task 1's classes, per seed."""
    accuracy = evaluation.generated_accuracy(method, quadrant_oracle, per_class=64)
    return lambda t, state: accuracy(state, jax.random.key(t), [0, 1]).mean(1).tolist()


@pytest.mark.parametrize("name,extra", [("dgr", {}), ("mergan", {}), ("mergan", {"variant": "ra"})])
def test_replay_keeps_task1_without_real_task1_data(name, extra):
    conditional = name == "mergan"
    acc, res = run(name, generated_task1_accuracy if conditional else None, **extra)
    assert acc[1, 0] > 80.0, acc  # chance is 25% over the 4 classes seen
    # Nothing in the state is image data: no uint8 leaf, no leaf shaped like images.
    for leaf in jax.tree.leaves(res["state"]):
        assert leaf.dtype != jnp.uint8 and tuple(leaf.shape[-2:]) != (8, 8)
    if conditional:  # the generator itself still draws task 1's classes after task 2
        (after_1,), (after_2,) = res["after_task"]
        assert after_1 > 80.0 and after_2 > 80.0, res["after_task"]


def test_generated_accuracy_counts_each_class_drawn():
    """Class 2's "samples" are class 1's pattern: 0% for it, 100% for the others, per seed."""
    images = jnp.asarray(SC.input_fn(SC.test(0)[0], None, False))  # classes 0, 1 in order

    def sample(state, key, per_class):
        del key
        pats = [images[0], images[-1], images[-1]]
        y = jnp.repeat(jnp.arange(3), per_class)
        return jnp.stack(pats)[y] * state, y

    nothing = lambda *args: None  # noqa: E731
    fake = methods.Method("fake", None, *[nothing] * 3, host=methods.HostHooks(sample=sample))
    acc = evaluation.generated_accuracy(fake, quadrant_oracle, per_class=4)
    got = acc(jnp.ones(2), jax.random.key(0), [0, 1, 2])
    np.testing.assert_array_equal(got, [[100.0, 100.0, 0.0]] * 2)


def test_without_replay_task1_is_forgotten():
    acc, _ = run("dgr", replay=False)
    assert acc[0, 0] > 80.0 and acc[1, 0] < 20.0, acc


@pytest.mark.parametrize(
    "arch,shape",
    [
        ("mlp", (8, 8)),
        ("mlp-wide", (8, 8)),
        ("dc", (28, 28)),
        ("dc", (32, 32, 3)),
        ("mergan-dc", (28, 28)),
        ("mergan-dc", (32, 32, 3)),
    ],
)
def test_gan_pairs_shapes(arch, shape):
    g, d = gan.make_pair(arch, shape, num_classes=10)
    if arch == "mlp-wide":
        assert (g.hidden, d.hidden) == ((512, 1024), (1024, 512))
    z = jnp.zeros((2, 16))
    y = jnp.array([1, 2])
    gp = g.init(jax.random.key(0), z, y)
    img = g.apply(gp, z, y)
    assert img.shape == (2, *shape) and float(img.min()) >= 0 and float(img.max()) <= 1
    dp = d.init(jax.random.key(1), img)
    adv, cls = d.apply(dp, img)
    assert adv.shape == (2,) and cls.shape == (2, 10)


def test_gradient_penalty_is_zero_for_unit_gradient_critic():
    """A linear critic with a unit-norm weight has |grad| = 1: the penalty vanishes."""
    w = jnp.ones(4) / 2.0

    def critic(params, x):
        return x.reshape(x.shape[0], -1) @ params, None

    real, fake = jnp.ones((3, 2, 2)), jnp.zeros((3, 2, 2))
    loss = generative.discriminator_loss(
        w, critic, real, jnp.ones(3), fake, jax.random.key(0), loss="wgan-gp"
    )
    assert float(loss) == pytest.approx(0.0 - 2.0, abs=1e-5)  # mean D(fake) - mean D(real)
    loss2 = generative.discriminator_loss(
        2 * w, critic, real, jnp.ones(3), fake, jax.random.key(0), loss="wgan-gp"
    )
    assert float(loss2) == pytest.approx(-4.0 + 10.0 * 1.0, abs=1e-4)  # |grad| = 2


def test_rows_without_adversarial_weight_teach_only_the_class_head():
    """DGM's replayed rows (`adv_w = 0`) change the classifier term, never the critic's."""
    w = jnp.ones(4) / 2.0

    def critic(params, x):
        flat = x.reshape(x.shape[0], -1)
        return flat @ params, jnp.stack([flat[:, 0], -flat[:, 0]], -1)

    fake = jnp.zeros((4, 2, 2))
    y = jnp.array([0, 0, 1, 1])
    adv_w = jnp.array([1.0, 1.0, 0.0, 0.0])

    def loss(real, ac_weight):
        return generative.discriminator_loss(
            w,
            critic,
            real,
            jnp.ones(4),
            fake,
            jax.random.key(0),
            loss="wgan-gp",
            real_y=y,
            ac_weight=ac_weight,
            adv_w=adv_w,
        )

    a = jnp.ones((4, 2, 2))
    b = a.at[2:].set(3.0)  # only the rows the critic must ignore differ
    assert float(loss(a, 0.0)) == pytest.approx(float(loss(b, 0.0)), abs=1e-5)
    assert float(loss(a, 0.0)) == pytest.approx(-2.0, abs=1e-5)  # 0 - mean D(real rows 0, 1)
    assert float(loss(a, 1.0)) != pytest.approx(float(loss(b, 1.0)), abs=1e-3)


def test_gan_step_is_one_compile_per_task():
    chex.clear_trace_counter()
    method = methods.get("mergan").make(model=models.MLP((8,), 4), input_fn=SC.input_fn, **FAST)
    state = method.init(jax.random.key(0), jnp.asarray(SC.train(0)[0][:1]))
    state = method.begin_task(state, methods.TaskInfo(0, SC.classes(0)), jax.random.key(8))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, batch, key):
        return method.train_step(state, batch, key)

    x, y = SC.train(0)
    for i in range(3):
        b = {"x": jnp.asarray(x[i * 8 : i * 8 + 8]), "y": jnp.asarray(y[i * 8 : i * 8 + 8])}
        state, m = step(state, b, jax.random.key(i))
    assert set(m) == {"loss", "d_loss", "g_loss"}
    images, labels = method.host.sample(state, jax.random.key(0), per_class=2)
    assert images.shape == (8, 8, 8) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_mergan_solver_steps_take_one_solver_step_per_critic_batch():
    """`solver_steps=2`: the solver steps on real chunk 0, then on chunk 1 (task 0: no replay)."""
    x, y = SC.train(0)
    batch = {"x": jnp.asarray(x[:8]), "y": jnp.asarray(y[:8])}
    make = methods.get("mergan").make
    method = make(model=models.MLP((8,), 4), input_fn=SC.input_fn, **FAST, solver_steps=2)
    state = method.init(jax.random.key(0), jnp.asarray(x[:1]))
    state = method.begin_task(state, methods.TaskInfo(0, SC.classes(0)), jax.random.key(8))
    new, _ = jax.jit(method.train_step)(state, batch, jax.random.key(1))

    real = SC.input_fn(batch["x"], None, True).reshape(2, 4, 8, 8)
    ys = batch["y"].reshape(2, 4)
    expected = state.solver
    for c in range(2):  # the replay term has weight 0 before any task is learned
        expected, _ = solver_step(expected, real[c], ys[c], real[c], ys[c], 1.0)
    assert int(new.solver.step) == 2
    chex.assert_trees_all_close(new.solver.params, expected.params, atol=1e-6)
    with pytest.raises(ValueError, match=r"mergan solver_steps must be <= n_critic \(2\), got 3"):
        make(model=models.MLP((8,), 4), input_fn=SC.input_fn, **FAST, solver_steps=3)


@pytest.mark.parametrize(
    "name,overrides,message",
    [
        ("dgr", {"gan": "vae"}, "dgr gan must be one of mlp, mlp-wide, dc, mergan-dc, got 'vae'"),
        ("dgr", {"gan_loss": "hinge"}, "dgr gan_loss must be one of wgan-gp, ns"),
        ("dgr", {"ratio": -0.5}, "dgr ratio must be >= 0 and <= 1, got -0.5"),
        ("dgr", {"ratio": 1.5}, "dgr ratio must be >= 0 and <= 1, got 1.5"),
        ("dgr", {"n_critic": 0}, "dgr n_critic must be >= 1, got 0"),
        ("dgr", {"temperature": 0.0}, "dgr temperature must be > 0"),
        ("dgr", {"b1": 1.0}, "dgr b1 must be < 1"),
        ("mergan", {"variant": "xx"}, "mergan variant must be one of jr, ra, got 'xx'"),
        ("mergan", {"solver_steps": 0}, "mergan solver_steps must be >= 1, got 0"),
        ("mergan", {"gan_loss": "ns"}, "mergan has no setting gan_loss"),
    ],
)
def test_bad_settings_are_one_clear_error(name, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        methods.get(name).make(model=models.MLP((8,), 4), input_fn=SC.input_fn, **overrides)


@pytest.mark.parametrize("name", ["dgr", "mergan"])
def test_config_is_recorded_whole_and_checked_against_the_batch(name):
    module = methods.get(name)
    config = module.Config(n_critic=3, z_dim=8)
    method = module.make(config, model=models.MLP((8,), 4), input_fn=SC.input_fn)
    assert method.config is config and method.hparams == config.to_dict()
    assert set(method.hparams) == set(module.Config.names())
    assert method.hparams["z_dim"] == 8 and method.hparams["n_critic"] == 3
    module.check_run(config, 6)
    with pytest.raises(ValueError, match="batch_size 32 must be a multiple of n_critic 3"):
        module.check_run(config, 32)
    assert module.Config().z_dim == {"dgr": 100, "mergan": 128}[name]
    assert "scholar" not in methods.names()  # the shared module is not a method


# The conv GANs' steps compile at XLA's default level: the suite's level 0 (conftest.py)
# runs their 32x32 convolutions 3x slower, which costs more than their compiles save.
OPTIMIZED = {"xla_backend_optimization_level": 2}


def svhn_like():
    """16 random 32x32x3 images of 4 classes in 2 tasks: the SVHN / CIFAR-10 configs' shapes."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 4).astype(np.int32)
    x = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    sc = scenarios.class_incremental(
        "svhn-like", (x, y, x, y), 2, scenarios.scaled_input(255.0), "resnet18"
    )
    return sc, x, y


def one_step_then_sample(method, sc, x, y):
    """`method`'s metrics after one jitted step of task 0, and one generated image a class."""
    state = method.init(jax.random.key(0), jnp.asarray(x[:1]))
    info = train.task_info(sc, train.RunConfig(batch_size=4), 0)
    state = method.begin_task(state, info, jax.random.key(8))
    batch = {"x": jnp.asarray(x[:4]), "y": jnp.asarray(y[:4])}
    state, metrics = jax.jit(method.train_step, compiler_options=OPTIMIZED)(
        state, batch, jax.random.key(1)
    )
    images, _ = method.host.sample(state, jax.random.key(2), per_class=1)
    return metrics, images


@pytest.mark.parametrize("name,arch", [("dgr", "dc"), ("mergan", "dc"), ("mergan", "mergan-dc")])
def test_dc_gan_replay_on_cifar_shaped_arrays(name, arch):
    """The SVHN / CIFAR-10 configs' path: conv GAN on 32x32x3 inputs."""
    sc, x, y = svhn_like()
    method = methods.get(name).make(
        model=models.MLP((16,), 4), input_fn=sc.input_fn, gan=arch, n_critic=2, z_dim=8
    )
    metrics, images = one_step_then_sample(method, sc, x, y)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert images.shape == (4, 32, 32, 3)


def test_dgm_on_svhn_shaped_arrays_with_the_svhn_config():
    """The SVHN config (the official cfg_svhn_dgmw.yml) on 32x32x3 inputs, tiny widths."""
    hp = tuned.lookup("dgm", "seq-svhn", None).values
    assert (hp["batch_size"], hp["n_epochs"], hp["g_lr"], hp["lamb_g"]) == (64, 151, 5e-4, 1e-3)
    sc, x, y = svhn_like()
    method = methods.get("dgm").make(
        model=models.MLP((16,), 4),
        input_fn=sc.input_fn,
        g_lr=hp["g_lr"],
        d_lr=hp["d_lr"],
        lamb_g=hp["lamb_g"],
        z_dim=8,
        hidden=8,
    )
    metrics, images = one_step_then_sample(method, sc, x, y)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert images.shape[1:] == (32, 32, 3)


class BatchNormMLP(nn.Module):
    """A small solver with BatchNorm (as the ResNet solvers have), cheap to compile."""

    num_classes: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16)(x.reshape(x.shape[0], -1))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(self.num_classes)(nn.relu(x))


def test_dgr_labels_replay_with_the_frozen_solver_and_its_statistics():
    """The previous solver labels replayed inputs with its own BatchNorm statistics (they do
    not move while the new solver trains) and only with the classes it has learned."""
    dgr = methods.get("dgr")
    config = dgr.Config(**FAST, soft_targets=True)
    method = dgr.make(config, model=BatchNormMLP(), input_fn=SC.input_fn)
    x0, y0 = SC.train(0)
    state = method.init(jax.random.key(0), x0[:1])
    step = jax.jit(method.train_step)
    batch = lambda x, y, i: {"x": x[8 * i : 8 * i + 8], "y": y[8 * i : 8 * i + 8]}
    for t, (x, y) in enumerate((SC.train(0), SC.train(1))):
        state = method.begin_task(state, train.task_info(SC, train.RunConfig(), t), None)
        if t == 1:
            probe = SC.input_fn(x0[:16], None, False)
            before = dgr.replay_targets(config, state, probe)
        for i in range(4):
            state, _ = step(state, batch(x, y, i), jax.random.key(i))
        if t == 0:
            state = method.end_task(state, None, (x, y), None)
    stats = (jax.tree.leaves(state.solver.batch_stats), jax.tree.leaves(state.prev_stats))
    moved = zip(*stats, strict=True)
    assert not all(np.allclose(a, b) for a, b in moved)  # the new solver's statistics moved
    np.testing.assert_allclose(dgr.replay_targets(config, state, probe), before, rtol=1e-6)
    # an unseen class (2 or 3) never gets probability or the argmax, however large its logit
    bias = state.prev_solver["Dense_1"]["bias"].at[3].set(1e4)
    tilted = state.replace(
        prev_solver={**state.prev_solver, "Dense_1": {**state.prev_solver["Dense_1"], "bias": bias}}
    )
    probs = dgr.replay_targets(config, tilted, probe)
    assert float(probs[:, 2:].max()) == 0.0 and np.allclose(probs.sum(-1), 1.0)
    hard = dgr.replay_targets(
        config.build({**config.to_dict(), "soft_targets": False}), tilted, probe
    )
    assert set(np.asarray(hard).tolist()) <= {0, 1}


def test_mergan_authors_generator_is_conditioned_only_through_batchnorm():
    """The `mergan-dc` generator: z alone enters its first layer (128 x 4*4*4*32 for 32x32,
    as the authors' Linear), the label only the BatchNorm scale and offset per class."""
    g, _ = gan.make_pair("mergan-dc", (28, 28), num_classes=10)
    z = jax.random.normal(jax.random.key(0), (4, 128))
    params = g.init(jax.random.key(1), z, jnp.zeros(4, jnp.int32))["params"]
    assert params["Dense_0"]["kernel"].shape == (128, 4 * 4 * 4 * 32)
    assert params["CondBatchNorm_0"]["scale"].shape == (10, 128)
    # with every class's scale and offset alike, the label changes nothing
    same = g.apply({"params": params}, z, jnp.array([0, 1, 2, 3]))
    np.testing.assert_allclose(same, g.apply({"params": params}, z, jnp.array([5, 5, 5, 5])))
    tilted = jax.tree.map(lambda a: a, params)
    tilted["CondBatchNorm_2"] = {
        **params["CondBatchNorm_2"],
        "offset": params["CondBatchNorm_2"]["offset"].at[3].set(1.0),
    }
    out = g.apply({"params": tilted}, z, jnp.array([0, 3, 0, 3]))
    base = g.apply({"params": params}, z, jnp.array([0, 3, 0, 3]))
    assert np.allclose(out[0], base[0]) and not np.allclose(out[1], base[1])
