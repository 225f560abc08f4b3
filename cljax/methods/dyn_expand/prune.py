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
from cljax.models.dyn_expand import NEG, dense, head_init, super_features

if TYPE_CHECKING:
    from cljax.methods.common import NetState
    from cljax.methods.dyn_expand.state import Config, DynState, Parts


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

        def fresh_heads(params):  # the official code's reset_parameters()
            k_fc, k_aux = jax.random.split(jax.random.fold_in(key, 1))
            kind = config.head(reset=True)
            return {
                **params,
                "fc": head_init(kind, k_fc, *params["fc"]["kernel"].shape),
                "aux": head_init(kind, k_aux, *params["aux"]["kernel"].shape),
            }

        reset = net.step + 1 == config.warmup_epochs * state.steps_per_epoch
        params = jax.lax.cond(reset, fresh_heads, lambda p: p, params)
    return net.replace(step=net.step + 1, params=params, opt_state=opt_state, batch_stats=stats)


def epoch_order(key, weights, batch: int):
    """One epoch of the official re-training's loader over a pool with 0/1 `weights`: each
    valid item once, in a random order, before the others. Returns `(batches, batch)`
    indices and 0/1 positions (0 for the padding past the pool's end)."""
    size = weights.shape[0]
    batches = math.ceil(size / batch)
    first = jnp.argsort(jnp.where(weights > 0, jax.random.uniform(key, (size,)), 2.0))
    order = jnp.pad(first, (0, batches * batch - size))
    pos = (jnp.arange(batches * batch) < size).astype(jnp.float32)
    return order.reshape(batches, batch), pos.reshape(batches, batch)


def retrain_classifier(config: Config, parts: Parts, state: DynState, pool, featurize, key):
    """The classifier re-initialised and trained on `pool` = (inputs, labels, 0/1 weights),
    logits / temperature, the extractors frozen.

    `featurize(inputs, key)` gives a batch's super features (the official re-training: every
    epoch visits the pool's items once, in a new random order, in batches of
    `retrain_batch`, the last one smaller, augmented by `featurize`). With `featurize` None
    the inputs are features computed once, and every epoch takes `ceil(pool /
    retrain_batch)` full batches of a random permutation wrapped round (`retrain_data=memory`)."""
    inputs, labels, weights = pool
    size, batch = weights.shape[0], config.retrain_batch
    batches = math.ceil(size / batch)
    k_init, k_order = jax.random.split(key)
    fc = head_init(
        config.head(reset=True),
        k_init,
        state.net.params["fc"]["kernel"].shape[0],
        parts.num_classes,
    )
    opt = parts.retrain_tx

    def epoch(carry, inputs_):
        i, k = inputs_
        factor = lr_factor(i, 0, config.retrain_milestones, config.lr_decay)
        k_aug = None
        if featurize is None:
            order = jax.random.permutation(k, batches * batch) % size
            order, pos = order.reshape(batches, batch), jnp.ones((batches, batch))
        else:
            k, k_aug = jax.random.split(k)
            order, pos = epoch_order(k, weights, batch)
        per_batch = (order, pos, jnp.arange(batches))
        return jax.lax.scan(lambda c, b: step(c, b, factor, k_aug), carry, per_batch)[0], None

    def step(carry, per_batch, factor, k_aug):
        fc, opt_state = carry
        idx, pos, j = per_batch
        w = weights[idx] * pos
        if featurize is None:
            x = inputs[idx]
        else:
            x = featurize(inputs[idx], jax.random.fold_in(k_aug, j))

        def loss_fn(fc):
            logits = jnp.where(state.seen, dense(fc, x) / config.temperature, NEG)
            return masked_mean(cross_entropy(logits, labels[idx]), w)

        grads = jax.grad(loss_fn)(fc)
        updates, new_opt_state = opt.update(grads, opt_state, fc)
        updates = jax.tree.map(lambda u: factor * u, updates)
        new = (optax.apply_updates(fc, updates), new_opt_state)
        if featurize is not None:  # a batch of padding only is no step (no momentum step)
            new = jax.tree.map(lambda a, b: jnp.where(w.sum() > 0, a, b), new, carry)
        return new, None

    keys = jax.random.split(k_order, config.retrain_epochs)
    inputs_ = (jnp.arange(config.retrain_epochs), keys)
    fc, _ = jax.lax.scan(epoch, (fc, opt.init(fc)), inputs_)[0]
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
        "fc": {**p["fc"], "kernel": p["fc"]["kernel"][rows]},
        "aux": {**p["aux"], "kernel": p["aux"]["kernel"][keep[-1]]},
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
