"""`dyn_expand`'s learning-rate schedule and its work after a task.

The scheduled SGD step (`lr_factor`, `scheduled_update`), the classifier
re-training (jitted, in `end_task`), the pruning of the newest extractor and
the parameter counts (host code: `HostHooks.resize`, `HostHooks.describe`).
The method, its settings and its state: `cljax/methods/dyn_expand.py`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cljax.methods.common import count_params, cross_entropy, masked_mean
from cljax.models.dyn_expand import NEG, dense, dense_init, super_features

if TYPE_CHECKING:
    from cljax.methods.common import NetState
    from cljax.methods.dyn_expand import Config, DynState, Parts


def lr_factor(epoch, warmup_epochs: int, milestones, decay: float):
    """The learning rate's multiple in `epoch` (0-based, may be traced): a linear warm-up
    reaching 1 in epoch `warmup_epochs - 1`, then `decay` once per milestone passed, the
    milestones counted in epochs after the warm-up (as the official code chains its schedulers)."""
    warm = jnp.minimum(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs else 1.0
    passed = sum((epoch - warmup_epochs >= m).astype(jnp.float32) for m in milestones)
    return warm * decay**passed


def scheduled_update(config: Config, state: DynState, grads, stats, key) -> NetState:
    """SGD step at lr * lr_factor(epoch) (scaling the update after momentum is PyTorch's
    schedule); the heads re-initialised at the first step after the warm-up."""
    net = state.net
    epoch = net.step // state.steps_per_epoch
    updates, opt_state = net.tx.update(grads, net.opt_state, net.params)
    warm, marks = config.warmup_epochs, config.milestones
    # static: the first task's own schedule (B50's pretraining), no warm-up
    if config.first_milestones and not state.old:
        warm, marks = 0, config.first_milestones
    factor = lr_factor(epoch, warm, marks, config.lr_decay)
    params = optax.apply_updates(net.params, jax.tree.map(lambda u: factor * u, updates))
    if warm:

        def fresh_heads(params):
            k_fc, k_aux = jax.random.split(jax.random.fold_in(key, 1))
            return {
                **params,
                "fc": dense_init(k_fc, *params["fc"]["kernel"].shape),
                "aux": dense_init(k_aux, *params["aux"]["kernel"].shape),
            }

        reset = net.step + 1 == config.warmup_epochs * state.steps_per_epoch
        params = jax.lax.cond(reset, fresh_heads, lambda p: p, params)
    return net.replace(step=net.step + 1, params=params, opt_state=opt_state, batch_stats=stats)


def retrain_classifier(config: Config, parts: Parts, state: DynState, feats, key) -> DynState:
    """Re-initialised classifier trained on the balanced memory (its super features `feats`),
    logits / temperature."""
    mem = state.memory
    capacity, batch = parts.capacity, config.retrain_batch
    batches = math.ceil(capacity / batch)
    k_init, k_order = jax.random.split(key)
    fc = dense_init(k_init, feats.shape[-1], parts.num_classes)
    opt = parts.retrain_tx

    def epoch(carry, inputs):
        i, k = inputs
        factor = lr_factor(i, 0, config.retrain_milestones, config.lr_decay)
        order = jax.random.permutation(k, batches * batch) % capacity
        batches_idx = order.reshape(batches, batch)
        return jax.lax.scan(lambda c, idx: step(c, idx, factor), carry, batches_idx)[0], None

    def step(carry, idx, factor):
        fc, opt_state = carry

        def loss_fn(fc):
            logits = jnp.where(state.seen, dense(fc, feats[idx]) / config.temperature, NEG)
            return masked_mean(cross_entropy(logits, mem.y[idx]), mem.valid[idx])

        grads = jax.grad(loss_fn)(fc)
        updates, opt_state = opt.update(grads, opt_state, fc)
        updates = jax.tree.map(lambda u: factor * u, updates)
        return (optax.apply_updates(fc, updates), opt_state), None

    keys = jax.random.split(k_order, config.retrain_epochs)
    inputs = (jnp.arange(config.retrain_epochs), keys)
    fc, _ = jax.lax.scan(epoch, (fc, opt.init(fc)), inputs)[0]
    return state.replace(net=state.net.replace(params={**state.net.params, "fc": fc}))


def resize(config: Config, parts: Parts, state: DynState, task) -> DynState:
    """Prunes the new extractor to its channels with mask on (host code, one seed)."""
    del config, task
    p = jax.tree.map(np.asarray, state.net.params)
    # A layer whose mask is all off keeps one channel (the network stays connected), with its
    # kernel and bias zeroed: relu(0) = 0 is what the mask made of it, and the frozen copy,
    # applied without masks from the next task on, must give the same features.
    keep = [e > 0 if (e > 0).any() else np.arange(e.size) == e.argmax() for e in p["emb"]]
    new = dict(p["new"])
    prev = np.ones(new["conv0"]["kernel"].shape[2], bool)
    for i, (k, e) in enumerate(zip(keep, p["emb"], strict=True)):
        kernel = new[f"conv{i}"]["kernel"][:, :, prev][..., k]
        bias = new[f"conv{i}"]["bias"][k]
        if not (e > 0).any():
            kernel, bias = np.zeros_like(kernel), np.zeros_like(bias)
        new[f"conv{i}"] = {"kernel": kernel, "bias": bias}
        prev = k
    old_dim = p["fc"]["kernel"].shape[0] - keep[-1].shape[0]
    rows = np.concatenate([np.ones(old_dim, bool), keep[-1]])
    params = {
        "new": new,
        "emb": tuple(e[k] for e, k in zip(p["emb"], keep, strict=True)),
        "fc": {"kernel": p["fc"]["kernel"][rows], "bias": p["fc"]["bias"]},
        "aux": {"kernel": p["aux"]["kernel"][keep[-1]], "bias": p["aux"]["bias"]},
    }
    params = jax.tree.map(jnp.asarray, params)
    net = state.net.replace(params=params, opt_state=parts.tx.init(params))
    return state.replace(net=net, unpruned=state.net.params["new"])


def describe(config: Config, parts: Parts, state: DynState) -> dict:
    """Parameter counts (all extractors + classifier; the newest before/after pruning) and FLOPs."""
    p = state.net.params
    x = parts.input_fn(state.memory.x[:1], None, False)
    full = count_params(jax.eval_shape(lambda: parts.base.init(jax.random.key(0), x, train=False)))

    def features(s):
        stats = s.net.batch_stats["new"]
        return super_features(parts.base, s.net.params, stats, s.old, x, config.masks)

    cost = jax.jit(features).lower(state).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {
        "extractors": len(state.old) + 1,
        "params": count_params([o["params"] for o in state.old])
        + count_params(p["new"])
        + count_params(p["fc"]),
        "new_extractor_params": count_params(p["new"]),
        "new_extractor_params_unpruned": full,
        "new_extractor_channels": [int(np.shape(e)[0]) for e in p["emb"]],
        "feature_flops_per_input": float(cost.get("flops", float("nan"))),
    }
