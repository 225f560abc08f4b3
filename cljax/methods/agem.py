"""Averaged GEM (`agem`): Chaudhry et al., ICLR 2019 (arXiv 1812.00420), as the DER paper ran
it (Mammoth's `models/agem.py` of the paper's release, commit 7ab9db9).

Each step computes the gradient `g` of the cross-entropy of the current batch
and, once the memory holds items, the reference gradient `g_ref` of the
cross-entropy of `minibatch_size` memory items (drawn without replacement; all
of them while fewer are stored). Where `g . g_ref < 0` the step would raise the
memory's loss, so `g` is projected onto the half-space that does not:

    g~ = g - (g . g_ref / g_ref . g_ref) g_ref

and SGD applies `g~` (else `g`). The memory: at each task's end,
`buffer_size // num_tasks` items drawn at random from the task's (un-augmented)
training data are appended (the paper's episodic memory of equal size per task).

Both forward passes run in training mode, as Mammoth's (5dc82be `models/agem.py:52, 61`):
each batch normalised by its own BatchNorm statistics, the running statistics
moved by the current batch and then, once the memory holds items, by the memory's
batch. The memory's items are augmented by the training transform
(`augment_reference`, Mammoth's `get_data(..., transform=self.transform)`; A-GEM-R's
are not, `cljax.methods.agem_r`).

While the memory holds fewer than `minibatch_size` items, the reference batch is
padded to that size with repeats of weight 0 (one shape a task; Mammoth draws the items
there are): the same gradient, and the repeats stay out of BatchNorm's batch and running
statistics (`resnet18`'s `mask`), as in Mammoth's forward of the items there are.

As van de Ven et al.'s code runs it (GMvandeVen/continual-learning e6d795a, `--agem`:
`replay="buffer"`, `use_replay="inequality"`; its `split-mnist*` rows): `balanced` (the memory
a budget per class: `buffer_size // num_tasks // classes` random items of each class at the
task's end; its budget 100 a class is `buffer_size=1000` over five two-class tasks), Adam
(`optimizer=adam`), `minibatch_size` 128, and in task-IL `task_heads` (each item's loss over
its task's head). Where this deviates from that code: its task-IL reference batch is
ceil(128 / t) items from each earlier task's memory, the loss averaged per task then over
tasks; here 128 items drawn from the whole memory, averaged over items (the same in
expectation, the per-task counts vary); its memory batches are consecutive batches of a
shuffled pass (drop_last), here each step's a fresh draw without replacement.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cljax.core.config import hparam
from cljax.methods import Method, TaskInfo, configure
from cljax.methods.common import (
    TASK_HEADS_DOC,
    ReplayConfig,
    ReplayState,
    add_task_memory,
    ce_and_grads,
    cross_entropy,
    forward,
    masked_mean,
    on_task_heads,
    optimizer,
    optimizer_hparam,
    predict_with,
    replay_batch,
    replay_init,
)

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4}


@dataclasses.dataclass(frozen=True)
class Config(ReplayConfig):
    minibatch_size: int = hparam(128, "memory items of each reference gradient", ge=1)
    augment_reference: bool = hparam(
        True, "augment the memory items of the reference gradient (Mammoth's A-GEM: yes)"
    )
    balanced: bool = hparam(
        False, "the memory an equal share of each class of a task (van de Ven's), not of the task"
    )
    optimizer: str = optimizer_hparam()
    task_heads: int = hparam(0, TASK_HEADS_DOC, ge=0)


def tree_dot(a, b):
    """`sum` of the elementwise products of two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def project(grad, ref):
    """A-GEM's projection: `grad` unchanged where `grad . ref >= 0`, else its component
    orthogonal to `ref` (so that `result . ref = 0`)."""
    dot = tree_dot(grad, ref)
    scale = jnp.where(dot < 0, dot / jnp.maximum(tree_dot(ref, ref), 1e-30), 0.0)
    return jax.tree.map(lambda g, r: g - scale * r, grad, ref)


def train_step(config: Config, input_fn, state: ReplayState, batch, key):
    """The current batch's gradient, projected against the memory's where they conflict; the
    running BatchNorm statistics moved by the batch, then by the memory's (once stored)."""
    k_cur, k_mem = jax.random.split(key)
    net = state.net
    x = input_fn(batch["x"], k_cur, True)
    loss, stats, grads = ce_and_grads(net, x, batch["y"], config.task_heads)
    mem_x, mem, valid = replay_batch(
        state, k_mem, config.minibatch_size, input_fn, config.augment_reference
    )
    stored = state.buffer.num_seen > 0

    def memory_loss(params):
        logits, mem_stats = forward(net, params, mem_x, stats, active=stored, weight=valid)
        logits = on_task_heads(logits, mem["y"], config.task_heads)
        return masked_mean(cross_entropy(logits, mem["y"]), valid), mem_stats

    ref, stats = jax.grad(memory_loss, has_aux=True)(net.params)
    projected = project(grads, ref)
    grads = jax.tree.map(lambda p, g: jnp.where(stored, p, g), projected, grads)
    return state.replace(net=net.apply_gradients(grads=grads, batch_stats=stats)), {"loss": loss}


def end_task(config: Config, state: ReplayState, task: TaskInfo, task_data, key):
    """`buffer_size // num_tasks` random items of the task (or an equal share of each of its
    classes: `balanced`) appended to the memory."""
    return add_task_memory("agem", state, config.buffer_size, task, task_data, key, config.balanced)


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """A-GEM with SGD (or Adam) at `lr`, `buffer_size` memory items, `minibatch_size` a
    reference."""
    config = configure(Config, config, overrides)
    tx = optimizer(config.optimizer, config.lr)

    return Method(
        name="agem",
        config=config,
        init=replay_init(model, tx, input_fn, config.buffer_size),
        train_step=lambda state, batch, key: train_step(config, input_fn, state, batch, key),
        predict=predict_with(input_fn),
        end_task=lambda state, task, data, key: end_task(config, state, task, data, key),
    )
