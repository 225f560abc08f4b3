"""HAL: anchors raise the forgetting they are learned for; the step adds their penalty."""

import jax
import jax.numpy as jnp
import numpy as np

from cljax import models, train
from cljax.methods import hal
from cljax.methods.common import penultimate, replay_batch
from tests.conftest import tiny_scenario

SC = tiny_scenario()
MODEL = models.MLP((8,), SC.num_classes)
CONFIG = train.RunConfig(batch_size=4, epochs=1)


def after_first_task(**overrides):
    method = hal.make(
        model=MODEL,
        input_fn=SC.input_fn,
        buffer_size=16,
        minibatch_size=4,
        anchor_steps=20,
        **overrides,
    )
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    info = train.task_info(SC, CONFIG, 0)
    state = method.begin_task(state, info, jax.random.key(1))
    x, y = (jnp.asarray(a) for a in SC.train(0))
    step = jax.jit(method.train_step)
    for i in range(4):
        state, _ = step(
            state, {"x": x[4 * i : 4 * i + 4], "y": y[4 * i : 4 * i + 4]}, jax.random.key(i)
        )
    end = jax.jit(method.end_task, static_argnums=1)
    return method, state, end(state, info, (x, y), jax.random.key(9)), info


def test_anchors_are_learned_to_be_forgotten_and_stay_near_the_mean_feature():
    method, before, after, info = after_first_task()
    assert np.asarray(after.anchor_valid).tolist() == [True, True, False, False]
    net, config, phi = before.net, method.config, before.phi
    features = penultimate(MODEL)
    # theta_m as end_task makes it is random (a buffer batch); measure against one fine-tuned
    # step on the whole buffer instead: the anchors must raise the forgetting for any such step
    xs = SC.input_fn(before.buffer.data["x"], None, False)
    ys = before.buffer.data["y"]

    def ce(p, x, y):
        logits = MODEL.apply({"params": p}, x)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])

    theta_m = jax.tree.map(
        lambda p, g: p - config.lr * g, net.params, jax.grad(ce)(net.params, xs, ys)
    )

    def objective(e, c):
        e = e[None]
        near = config.gamma * jnp.sum((features(net.params, None, e) - phi) ** 2)
        return ce(theta_m, e, c[None]) - ce(net.params, e, c[None]) - near

    classes = jnp.asarray(info.classes)
    start = jax.vmap(lambda k: jax.random.uniform(k, after.anchors.shape[1:]))(
        jax.random.split(jax.random.key(0), 2)
    )
    learned = hal.learn_anchors(
        config, features, net, net.params, theta_m, phi, classes, jax.random.key(0), start.shape[1:]
    )
    for c in range(2):
        assert float(objective(learned[c], classes[c])) > float(objective(start[c], classes[c]))


def test_step_adds_the_anchor_penalty_gradient_at_the_old_parameters():
    method, _, state, _ = after_first_task()
    x, y = (jnp.asarray(a) for a in SC.train(1))
    batch = {"x": x[:4], "y": y[:4]}
    key = jax.random.key(5)
    new, _ = jax.jit(method.train_step)(state, batch, key)
    # by hand, with the buffer items the step drew (same key split as the step)
    _, k_buf, _ = jax.random.split(key, 3)
    bx, buf, valid = replay_batch(state, k_buf, 4, SC.input_fn)
    cx = jnp.concatenate([SC.input_fn(batch["x"], None, True), bx])
    cy = jnp.concatenate([batch["y"], buf["y"]])
    w = jnp.concatenate([jnp.ones(4), valid])
    lr, lam = method.config.lr, method.config.hal_lambda
    anchors = state.anchors[:2]

    @jax.jit
    def by_hand(p):
        def ce(p):
            lp = jax.nn.log_softmax(MODEL.apply({"params": p}, cx))
            return -jnp.sum(lp[jnp.arange(cy.shape[0]), cy] * w) / jnp.sum(w)

        g = jax.grad(ce)(p)
        tentative = jax.tree.map(lambda a, b: a - lr * b, p, g)
        target = MODEL.apply({"params": tentative}, anchors)
        pen = lambda q: lam * jnp.mean((target - MODEL.apply({"params": q}, anchors)) ** 2)  # noqa: E731
        ga = jax.grad(pen)(p)
        return jax.tree.map(lambda a, b, c: a - lr * (b + c), p, g, ga)

    expected = by_hand(state.net.params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        new.net.params,
        expected,
    )
