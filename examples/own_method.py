"""A method written outside cljax and registered: ER-ACE in its plainest form.

    python examples/own_method.py                  # train.run on seq-digits, 2 seeds
    cljax --import examples/own_method.py --method er_ace_plain --benchmark seq-digits

ER with the asymmetric cross-entropy (Caccia et al., ICLR 2022) as a user might write it
in an afternoon: the current batch's loss is taken over the logits of the classes present
in that batch only (so new classes do not push the old ones' logits down), the replayed
batch's over every class. The built-in `er_ace` is the method as Mammoth runs it (its
cosine classifier, the not-yet-seen classes left open, no replay in the first task). A method is
a module-like object with `Config` (hyperparameters declared once, with
`cljax.core.config.hparam`) and `make(config, *, model, input_fn) -> Method` of pure
functions; `cljax.methods.register` makes it a `--method` of the `cljax`
command and of `methods.get`, and the driver runs it (seeds under `vmap`,
checkpoints, results) as any built-in one. `TUNED` (optional) gives its
settings per benchmark and buffer, as `cljax/tuned/<method>.py` does.
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import optax

from cljax import methods, models, train
from cljax.benchmarks import scenarios
from cljax.core import buffer
from cljax.core.config import hparam
from cljax.methods import Method, configure
from cljax.methods.common import (
    ReplayConfig,
    cross_entropy,
    forward,
    masked_mean,
    predict_with,
    replay_batch,
    replay_init,
    sgd_update,
)
from cljax.tuned import row

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4}  # what a quick check runs


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    lr: float = hparam(0.1, "SGD step size", gt=0)
    minibatch_size: int = hparam(10, "buffer items replayed per step", ge=1)


def train_step(config: Config, input_fn, state, batch, key):
    k_cur, k_buf, k_add = jax.random.split(key, 3)
    x = input_fn(batch["x"], k_cur, True)
    buf_x, items, valid = replay_batch(state, k_buf, config.minibatch_size, input_fn)

    def loss_fn(params):
        logits, stats = forward(state.net, params, x, state.net.batch_stats)
        present = jnp.zeros(logits.shape[-1], bool).at[batch["y"]].set(True)
        masked = jnp.where(present, logits, -1e9)  # the batch's own classes only
        loss = cross_entropy(masked, batch["y"]).mean()
        out, stats = forward(state.net, params, buf_x, stats, active=state.buffer.num_seen > 0)
        loss = loss + masked_mean(cross_entropy(out, items["y"]), valid)
        return loss, (stats, logits)

    net, loss, _ = sgd_update(state.net, loss_fn)
    new_buffer = buffer.add(state.buffer, {"x": batch["x"], "y": batch["y"]}, k_add)
    return state.replace(net=net, buffer=new_buffer), {"loss": loss}


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """ER-ACE with SGD at `lr`, a reservoir of `buffer_size` raw items."""
    config = configure(Config, config, overrides)
    return Method(
        name="er_ace_plain",
        config=config,
        init=replay_init(model, optax.sgd(config.lr), input_fn, config.buffer_size),
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
    )


# Its tuned settings, as cljax/tuned/<method>.py holds them (source, then values).
TUNED = {"seq-digits": {200: row("example: not tuned, ER's defaults", lr=0.1, minibatch_size=10)}}

# `cljax --import examples/own_method.py` runs this file: registering is all it needs to do.
methods.register("er_ace_plain", sys.modules[__name__])


def main(argv=None) -> dict:
    scenario = scenarios.build("seq-digits")
    method = make(
        Config(buffer_size=200),
        model=models.make("mlp", scenario.num_classes),
        input_fn=scenario.input_fn,
    )
    steps = int(argv[0]) if argv else None
    config = train.RunConfig(epochs=1, batch_size=10, seeds=(0, 1), steps=steps, progress=False)
    res = train.run(method, scenario, config)
    acc = res["final_average_accuracy"]["class-il"]
    print(f"er_ace_plain on seq-digits, 2 seeds: class-IL {acc['mean']:.2f} +- {acc['std']:.2f}")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
