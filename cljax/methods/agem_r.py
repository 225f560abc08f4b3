"""A-GEM with a reservoir buffer (`agem_r`): the DER paper's variant of A-GEM (Chaudhry et
al., ICLR 2019) for streams without task boundaries (Mammoth's `models/agem_r.py`, commit
7ab9db9).

The step is A-GEM's (`cljax.methods.agem.train_step`): the current batch's
gradient, projected onto the half-space where the memory's loss does not rise
when the two conflict, the reference gradient from `minibatch_size` memory items.
The memory is filled as ER's, by reservoir sampling over every item seen (the
batch added after the step, un-augmented), instead of A-GEM's equal share per
finished task: no task boundary is needed, so it runs on a stream. Unlike A-GEM's,
the reference batch is not augmented (`augment_reference` False): Mammoth's
`agem_r` reads its memory without a transform (5dc82be `models/agem_r.py:47`,
`get_data(self.args.minibatch_size)`).

Where this deviates from Mammoth, and why:
- Mammoth's memory holds its `not_aug_inputs`, `ToTensor()` alone: on CIFAR and
  Tiny ImageNet its reference batch also skips the normalisation the network
  trains with. Ours is the test transform's (normalised) input. MNIST has no
  normalisation: the same there.
- Otherwise A-GEM's (see `cljax.methods.agem`).
"""

from __future__ import annotations

import dataclasses

import jax

from cljax.core import buffer as buffer_lib
from cljax.core.config import hparam
from cljax.methods import Method, agem, configure
from cljax.methods.common import ReplayState, optimizer, predict_with, replay_init

TEST_CONFIG = agem.TEST_CONFIG


@dataclasses.dataclass(frozen=True)
class Config(agem.Config):
    """A-GEM's settings (`cljax.methods.agem.Config`); the reference batch not augmented."""

    augment_reference: bool = hparam(
        False, "augment the memory items of the reference gradient (Mammoth's A-GEM-R: no)"
    )


def train_step(config: Config, input_fn, state: ReplayState, batch, key):
    """A-GEM's projected step, then the batch offered to the reservoir."""
    k_step, k_add = jax.random.split(key)
    state, metrics = agem.train_step(config, input_fn, state, batch, k_step)
    new_buffer = buffer_lib.add(state.buffer, {"x": batch["x"], "y": batch["y"]}, k_add)
    return state.replace(buffer=new_buffer), metrics


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """A-GEM-R with SGD (or Adam) at `lr`, a reservoir of `buffer_size`, `minibatch_size` a
    reference."""
    config = configure(Config, config, overrides)
    if config.balanced:
        raise ValueError(
            "agem_r: balanced=true chooses A-GEM's memory at each task's end; agem_r's memory "
            "is a reservoir: use agem, or leave balanced off"
        )
    tx = optimizer(config.optimizer, config.lr)
    return Method(
        name="agem_r",
        config=config,
        init=replay_init(model, tx, input_fn, config.buffer_size),
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
    )
