"""DER++ and the replay buffer inside your own Flax/optax training loop, on your own model.

    python examples/own_loop.py [--steps 200]

Two ways, on scikit-learn's 8x8 digits split into 5 tasks of 2 classes (no files
needed):

1. cljax's DER++ step as a black box: `derpp.make(...)` on your Flax module
   gives pure `init` / `train_step` / `predict`; you write the loop (here one
   `lax.scan` a task, jitted).
2. Only the buffer: your optimizer (optax's Adam), your loss (DER++'s, written
   out), `cljax.core.buffer` for the reservoir and the replay draws.

Both print the class-IL accuracy on every task seen after the last one.
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cljax.benchmarks import scenarios
from cljax.core import buffer
from cljax.methods import derpp


class MyNet(nn.Module):
    """Your model: anything `model.apply({"params": p}, x, train=...)` -> logits."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.gelu(nn.Dense(64)(x))
        return nn.Dense(self.num_classes)(x)


def as_input(x, key=None, train=False):
    """Raw uint8 8x8 digits (0..16) to floats; cljax's steps call it as `input_fn`."""
    del key, train
    return jnp.asarray(x, jnp.float32) / 16.0


def task_batches(x, y, steps, batch, rng):
    """`steps` batches of one task's data, drawn without replacement, epoch after epoch."""
    order = np.concatenate([rng.permutation(len(y)) for _ in range(steps * batch // len(y) + 1)])
    idx = order[: steps * batch].reshape(steps, batch)
    return {"x": jnp.asarray(x[idx]), "y": jnp.asarray(y[idx])}


def accuracy(predict, state, scenario, upto):
    """Class-IL accuracy (percent) on each task 0..upto's test set."""
    out = []
    for t in range(upto + 1):
        x, y = scenario.test(t)
        out.append(float((predict(state, x).argmax(-1) == y).mean() * 100))
    return out


def with_cljax_step(scenario, steps: int, seed: int = 0):
    """1. DER++'s `train_step` in your own loop."""
    method = derpp.make(
        derpp.Config(lr=0.1, alpha=0.3, beta=0.5, buffer_size=200, minibatch_size=10),
        model=MyNet(num_classes=scenario.num_classes),
        input_fn=as_input,
    )
    key = jax.random.key(seed)
    state = method.init(key, scenario.train(0)[0][:1])

    @jax.jit
    def train_task(state, batches, key):
        keys = jax.random.split(key, len(batches["y"]))
        state, metrics = jax.lax.scan(
            lambda s, inp: method.train_step(s, inp[0], inp[1]), state, (batches, keys)
        )
        return state, metrics["loss"].mean()

    rng = np.random.default_rng(seed)
    for t in range(scenario.num_tasks):
        x, y = scenario.train(t)
        key, k = jax.random.split(key)
        state, loss = train_task(state, task_batches(x, y, steps, 10, rng), k)
        print(f"  task {t + 1}: mean loss {float(loss):.3f}")
    return accuracy(jax.jit(method.predict), state, scenario, scenario.num_tasks - 1)


def with_buffer_only(scenario, steps: int, seed: int = 0, alpha=0.3, beta=0.5, replay=10):
    """2. Your optimizer and loss; `cljax.core.buffer` keeps the reservoir of (x, y, logits)."""
    model, tx = MyNet(num_classes=scenario.num_classes), optax.adam(5e-3)
    key = jax.random.key(seed)
    x0 = scenario.train(0)[0][:1]
    params = model.init(key, as_input(x0))["params"]
    opt_state = tx.init(params)
    example = {"x": x0[0], "y": jnp.int32(0), "logits": jnp.zeros(scenario.num_classes)}
    buf = buffer.init(200, example)

    def loss_fn(params, batch, mse_items, mse_valid, ce_items, ce_valid):
        logits = model.apply({"params": params}, as_input(batch["x"]))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        out = model.apply({"params": params}, as_input(mse_items["x"]))
        mse = jnp.mean((out - mse_items["logits"]) ** 2, -1)
        out = model.apply({"params": params}, as_input(ce_items["x"]))
        ce_r = optax.softmax_cross_entropy_with_integer_labels(out, ce_items["y"])
        masked = lambda v, m: jnp.sum(v * m) / jnp.maximum(m.sum(), 1)  # noqa: E731
        return ce + alpha * masked(mse, mse_valid) + beta * masked(ce_r, ce_valid), logits

    @jax.jit
    def step(carry, batch_key):
        params, opt_state, buf = carry
        batch, key = batch_key
        k1, k2, k3 = jax.random.split(key, 3)
        # two independent replay draws; `valid` masks slots not filled yet
        idx1, valid1 = buffer.sample_indices(buf, k1, replay)
        idx2, valid2 = buffer.sample_indices(buf, k2, replay)
        items1, items2 = buffer.gather(buf, idx1), buffer.gather(buf, idx2)
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch, items1, valid1.astype(jnp.float32), items2, valid2.astype(jnp.float32)
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        offered = {"x": batch["x"], "y": batch["y"], "logits": jax.lax.stop_gradient(logits)}
        buf = buffer.add(buf, offered, k3)  # reservoir sampling, pure
        return (params, opt_state, buf), loss

    rng = np.random.default_rng(seed)
    for t in range(scenario.num_tasks):
        x, y = scenario.train(t)
        batches = task_batches(x, y, steps, 10, rng)
        key, k = jax.random.split(key)
        keys = jax.random.split(k, steps)
        (params, opt_state, buf), losses = jax.lax.scan(
            step, (params, opt_state, buf), (batches, keys)
        )
        print(
            f"  task {t + 1}: mean loss {float(losses.mean()):.3f}, buffer {int(buf.num_seen)} seen"
        )
    predict = jax.jit(lambda p, x: model.apply({"params": p}, as_input(x)))
    return accuracy(predict, params, scenario, scenario.num_tasks - 1)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200, help="steps a task")
    args = p.parse_args(argv)
    scenario = scenarios.build("seq-digits")
    print("1. DER++'s step in your loop, on your model")
    a = with_cljax_step(scenario, args.steps)
    print(f"  class-IL accuracy per task: {[round(v, 1) for v in a]}, mean {np.mean(a):.1f}")
    print("2. your optimizer and loss, cljax's buffer")
    b = with_buffer_only(scenario, args.steps)
    print(f"  class-IL accuracy per task: {[round(v, 1) for v in b]}, mean {np.mean(b):.1f}")
    return {"cljax_step": a, "buffer_only": b}


if __name__ == "__main__":
    main()
