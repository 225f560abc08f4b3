"""X-DER (`xder`): Boschini, Bonicelli, Buzzega, Porrello and Calderara, *Class-Incremental
Continual Learning into the eXtended DER-verse*, TPAMI 2022 (arXiv 2201.00766), as the paper's
code runs it (Mammoth's `models/xder.py` at its tpami2023 tag, ad4d390).

DER++ with every head allocated from the start, whose memory is written at the end of each
task only (class-balanced) and whose stored responses are kept up to date: the heads of the
tasks after an item's own are rewritten with the network's later outputs. Loss:

    CE(f(x)[cur], y)                               the current task's head only
    + alpha * ||f(x') - z'||^2                     every head (DER)
    + beta * CE(f(x'')[past], y'')                 the past heads (DER++)
    + lambd * SupCon over each future head         (future preparation, not in the last task)
    + eta * future constraint + eta * past constraint

- **Logit update** ("present" and "future"): during task t, each distinct replayed item of a
  past task is accepted with probability 1 / (times drawn this task), and its stored heads
  t..T-1 become the network's current outputs for it (before the step's update), rescaled
  by `gamma * z_y / max` when their largest exceeds `gamma` times its stored true-class
  logit z_y (`update_logits`); at the end of task t every past item's heads t..T-1 are
  rewritten that way from one pass over the memory. An item stored at the end of task t
  keeps its outputs, its past heads rescaled the same way.
- **Future preparation**: `lambd` x a supervised contrastive loss (temperature
  `simclr_temp`) in each future head's own (L2-normalised) space, over `simclr_num_aug`
  strong views (`cljax.benchmarks.augment`) of `simclr_batch_size` memory items and of the
  batch's first `simclr_batch_size` items; the mean over heads and images.
- **Constraints** (margin `constr_margin`, means over the violating rows): future, on the
  raw outputs of the batch and of the distinct replayed items: max future logit + m <= max
  logit of the item's own head; past (`past_constraint`), on the batch: the largest past
  probability (not differentiated) + m <= the largest current one, softmax over the seen
  classes.
- **Memory**: at the end of task t the past classes are cut to `buffer_size // classes seen`
  items each (the first ones), and the free room is filled from a shuffled pass over the
  task's data (training transform, chunks of the run's batch size) with an equal share per
  new class; the responses stored are those of that pass.

Every forward is in training mode. Outside the gradient (the memory's passes) and in the
contrastive views' pass the BatchNorm statistics are the batch's and the running ones are
kept, as the reference's `bn_track_stats(False)`; the three other passes update them one
after the other. `align_bn` gives Mammoth HEAD's handling instead (e75a491: the batch's pass
keeps them, the first replayed minibatch is forwarded with `minibatch_size // t` of the
batch's items and updates them, the second keeps them).

Heads are contiguous column blocks (task t: columns `t*k .. (t+1)*k - 1`, `k` classes a
task), as Mammoth numbers its classes: the tasks must be of equal size and take their
classes in label order (checked at `begin_task`), and the backbone must have one output a
class of the whole sequence.

Mammoth HEAD (e75a491) differs in defaults (`lambd` 0.05, 4 views, no past constraint,
`align_bn` on: the settings of our rows beside it), and takes the contrastive loss over
the whole batch rather than its first `simclr_batch_size` items (the same while the batch
is no larger).

Deviations: HEAD's distance-preserving term (`dp_weight`, 3000 in its Seq-CIFAR-100 config,
absent from the paper's code) is not implemented; with `align_bn` off the contrastive pass
keeps the running statistics (as the paper's code; HEAD then updates them); the strong
augmentation is in float (no 8-bit rounding between its steps); the draws come from JAX
keys. As in the reference, the L2 normalisation is `x / max(|x|, 1e-12)`, whose gradient
is 1e12 times larger at an exactly-zero head: Mammoth's Seq-MNIST run of seed 0 collapses
at its first step that way (an all-black view and zero biases; see
experiments/results/reference_runs/mammoth_head_seqmnist_more.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax.benchmarks.augment import strong_augment
from cljax.core import buffer as buffer_lib
from cljax.core.config import hparam
from cljax.methods import Method, TaskInfo, configure
from cljax.methods.common import (
    NetState,
    ReplayConfig,
    create_net,
    cross_entropy,
    forward,
    masked_mean,
    predict,
    replay_draw,
    shuffled_batches,
)
from cljax.methods.rpc import polytope_scores
from cljax.models.heads import regular_simplex

TEST_CONFIG = {"buffer_size": 16, "minibatch_size": 4, "simclr_batch_size": 4}
NEG = -1e9  # the logit of a column left out of a softmax


@dataclasses.dataclass(frozen=True)
class XderConfig(ReplayConfig):
    """Settings every X-DER variant has."""

    lr: float = hparam(0.03, "SGD step size", gt=0)
    alpha: float = hparam(0.3, "weight of the logit MSE on the first replayed minibatch", ge=0)
    beta: float = hparam(0.8, "weight of the past heads' CE on the second replayed minibatch", ge=0)
    gamma: float = hparam(
        0.85, "cap of an updated head's largest logit, as a fraction of the stored true one", gt=0
    )
    constr_eta: float = hparam(0.1, "weight of the future and past constraints", ge=0)
    constr_margin: float = hparam(0.3, "the constraints' margin", ge=0)
    past_constraint: bool = hparam(True, "the past constraint (Mammoth HEAD: off)")
    future_constraint: bool = hparam(True, "the future constraint")
    align_bn: bool = hparam(
        False, "Mammoth HEAD's BatchNorm handling of the replay passes (see the module's docstring)"
    )


@dataclasses.dataclass(frozen=True)
class Config(XderConfig):
    lambd: float = hparam(
        0.1,
        "weight of the future heads' contrastive loss (0: none; HEAD: 0.05)",
        ge=0,
        sweepable=False,
    )
    simclr_temp: float = hparam(5.0, "the contrastive loss's temperature", gt=0)
    simclr_batch_size: int = hparam(
        64, "memory items (and batch items at most) in the contrastive loss", ge=1
    )
    simclr_num_aug: int = hparam(2, "strong views of each image (HEAD: 4)", ge=2)


@struct.dataclass
class State:
    net: NetState
    buffer: buffer_lib.Buffer  # raw x, y, the stored responses "logits"
    counter: jax.Array  # (buffer_size,) times each slot was drawn this task
    task: jax.Array  # int32: the task being trained
    cpt: jax.Array  # int32: classes a task (0 before the first task)


def update_logits(old, new, y, window, gamma):
    """Mammoth's `update_logits`: `old` with its `window` columns (booleans, `(C,)`) taken from
    `new`, scaled by `gamma * old[y] / max` where their largest exceeds `old[y]`."""
    true = jnp.take_along_axis(old, y[:, None], axis=1)
    top = jnp.max(jnp.where(window, new, -jnp.inf), axis=1, keepdims=True)
    scaled = jnp.where(top > true, new * (gamma * true / top), new)
    return jnp.where(window, scaled, old)


def first_occurrence(idx, valid):
    """Booleans: the valid entries of `idx` that no earlier valid entry repeats."""
    pos = jnp.arange(idx.shape[0])
    earlier = (idx[:, None] == idx[None, :]) & valid[None, :] & (pos[None, :] < pos[:, None])
    return valid & ~jnp.any(earlier, axis=1)


def hinge_mean(d, weight):
    """Mean of the positive entries of `d` among those of nonzero `weight` (0 if none)."""
    violated = (d > 0) & (weight > 0)
    return jnp.sum(jnp.where(violated, d, 0.0)) / jnp.maximum(jnp.sum(violated), 1)


def head_supcon(z, labels, weight, head, heads_used, temp: float, views: int):
    """Per head h: SupCon of the L2-normalised head-h columns of `z` (`(N*V, C)`, the V views
    of each image adjacent), positives the other views of the same label, summed over the
    images of the mean over their views; `(C,)` (one entry a possible head; those not in
    `heads_used` are 0). `weight` `(N*V,)` marks the real views."""
    n_col = z.shape[1]
    sq = jax.ops.segment_sum((z * z).T, head, num_segments=n_col)  # (heads, M)
    norm = jnp.sqrt(jnp.maximum(sq, 1e-24))  # max(|x|, 1e-12), as F.normalize
    zn = z / norm[head].T
    prods = zn[:, None, :] * zn[None, :, :]  # (M, M, C)
    sims = jax.ops.segment_sum(jnp.moveaxis(prods, 2, 0), head, num_segments=n_col) / temp
    m = z.shape[0]
    real = weight > 0
    other = ~jnp.eye(m, dtype=bool) & real[None, :]
    positive = other & (labels[:, None] == labels[None, :])
    log_den = jax.nn.logsumexp(jnp.where(other[None], sims, -jnp.inf), axis=2, keepdims=True)
    log_prob = sims - log_den
    per_view = -jnp.sum(jnp.where(positive[None], log_prob, 0.0), axis=2) / jnp.maximum(
        jnp.sum(positive, axis=1), 1
    )
    per_view = jnp.where(real[None], per_view, 0.0)
    per_image = per_view.reshape(n_col, m // views, views).mean(axis=2)
    return jnp.where(heads_used, per_image.sum(axis=1), 0.0)


def make_xder(
    name: str,
    config: XderConfig,
    *,
    model,
    input_fn,
    polytope: bool = False,
    ce_heads: str = "current",
    freeze_replay_bn: bool = False,
) -> Method:
    """An X-DER variant: `polytope` scores through the fixed regular simplex (xder_rpc),
    `ce_heads` ("current" or "current+future") the batch's CE columns, `freeze_replay_bn`
    keeps the running statistics in the replay passes (and makes `align_bn` a no-op, as
    HEAD's xder_rpc); the contrastive term where `config` has `lambd` > 0."""
    n_col = getattr(model, "num_classes", None)
    if n_col is None:
        raise ValueError(f"{name} needs a backbone with num_classes (one output a class)")
    simplex = jnp.asarray(regular_simplex(n_col)) if polytope else None
    lambd = getattr(config, "lambd", 0.0)
    align_bn = config.align_bn and not freeze_replay_bn
    tx = optax.sgd(config.lr)
    stats = getattr(input_fn, "normalization", ((0.0,), (1.0,)))  # (mean, std) of input_fn
    mean, std = (jnp.asarray(v, jnp.float32) for v in stats)

    def scores(out):
        return polytope_scores(out, simplex) if polytope else out

    def run(net, params, x, stats, **kw):
        out, stats = forward(net, params, x, stats, **kw)
        return scores(out), stats

    def strong_views(raw, key):
        """`simclr_num_aug` strong views of each raw image, adjacent, normalised."""
        unit = input_fn(raw, None, False) * std + mean  # back to [0, 1]
        reps = jnp.repeat(unit, config.simclr_num_aug, axis=0)
        return (strong_augment(reps, key) - mean) / std

    def init(key, example_x):
        net = create_net(model, tx, key, input_fn(example_x, key, False))
        example = {
            "x": example_x[0],
            "y": jnp.zeros((), jnp.int32),
            "logits": jnp.zeros((n_col,), jnp.float32),
        }
        return State(
            net=net,
            buffer=buffer_lib.init(config.buffer_size, example),
            counter=jnp.zeros(config.buffer_size, jnp.float32),
            task=jnp.zeros((), jnp.int32),
            cpt=jnp.zeros((), jnp.int32),
        )

    def begin_task(state: State, task: TaskInfo, key):
        del key
        k = len(task.classes)
        if tuple(task.classes) != tuple(range(task.index * k, (task.index + 1) * k)):
            raise ValueError(
                f"{name}: task {task.index} has classes {task.classes}; its heads are column "
                f"blocks, so task t must hold classes t*k .. (t+1)*k-1 (equal tasks, label order)"
            )
        if task.num_tasks and task.num_tasks * k != n_col:
            raise ValueError(
                f"{name}: {task.num_tasks} tasks of {k} classes need a backbone with "
                f"{task.num_tasks * k} outputs, this one has {n_col}"
            )
        return state.replace(task=jnp.asarray(task.index, jnp.int32), cpt=jnp.asarray(k, jnp.int32))

    def heads(state: State):
        return jnp.arange(n_col) // jnp.maximum(state.cpt, 1)

    def train_step(state: State, batch, key):
        k_cur, k_r1, k_r2, k_r3, k_views, k_accept = jax.random.split(key, 6)
        net, buffer, t = state.net, state.buffer, state.task
        head = heads(state)
        n_heads = n_col // jnp.maximum(state.cpt, 1)
        cur, fut, past, seen = head == t, head > t, head < t, head <= t
        not_last = t < n_heads - 1
        x, y = input_fn(batch["x"], k_cur, True), batch["y"]
        mb = config.minibatch_size
        idx1, x1, items1, valid1 = replay_draw(buffer, k_r1, mb, input_fn)
        idx2, x2, items2, valid2 = replay_draw(buffer, k_r2, mb, input_fn)
        w1, w2 = valid1.astype(jnp.float32), valid2.astype(jnp.float32)
        has_buf = buffer.size > 0
        idx = jnp.concatenate([idx1, idx2])
        y_u = jnp.concatenate([items1["y"], items2["y"]])
        stored_u = jnp.concatenate([items1["logits"], items2["logits"]])
        first = first_occurrence(idx, jnp.concatenate([valid1, valid2]))
        use_supcon = lambd > 0
        if use_supcon:
            sb = config.simclr_batch_size
            idx3, valid3 = buffer_lib.sample_indices(buffer, k_r3, sb)
            raw = jnp.concatenate([buffer.data["x"][idx3], batch["x"][:sb]])
            img_w = jnp.concatenate([valid3, jnp.ones(min(sb, y.shape[0]), bool)])
            labels = jnp.concatenate([buffer.data["y"][idx3], y[:sb]])
            views = strong_views(raw, k_views)
            v = config.simclr_num_aug
            view_w = jnp.repeat(img_w, v).astype(jnp.float32)
            view_y = jnp.repeat(labels, v)
        ce_cols = cur | fut if ce_heads == "current+future" else cur

        def loss_fn(params):
            stats = net.batch_stats
            z_s, stats = run(net, params, x, stats, active=~(align_bn & (t > 0)))
            loss = cross_entropy(jnp.where(ce_cols, z_s, NEG), y).mean()
            if align_bn:
                n_s = min(mb, y.shape[0])
                share = jnp.where(t > 0, mb // jnp.maximum(t, 1), 0)
                w_mix = jnp.concatenate([w1, (jnp.arange(n_s) < share).astype(jnp.float32)])
                out, stats = run(
                    net, params, jnp.concatenate([x1, x[:n_s]]), stats, active=has_buf,
                    weight=w_mix,
                )  # fmt: skip
                z1 = out[:mb]
            else:
                z1, stats = run(
                    net, params, x1, stats, active=has_buf & (not freeze_replay_bn), weight=w1
                )
            mse = jnp.mean((z1 - items1["logits"]) ** 2, axis=-1)
            loss = loss + config.alpha * masked_mean(mse, w1)
            z2, stats = run(
                net, params, x2, stats,
                active=has_buf & (not freeze_replay_bn) & (not align_bn), weight=w2,
            )  # fmt: skip
            ce2 = jnp.where(valid2, cross_entropy(jnp.where(past, z2, NEG), items2["y"]), 0.0)
            loss = loss + config.beta * masked_mean(ce2, w2)
            z_b = jnp.concatenate([z1, z2])  # the replayed rows, duplicates included
            if use_supcon:
                z_c, _ = run(net, params, views, stats, active=False, weight=view_w)
                h = jnp.arange(n_col)
                per_head = head_supcon(
                    z_c, view_y, view_w, head, (h > t) & (h < n_heads), config.simclr_temp, v
                )
                n_img = jnp.maximum(jnp.sum(img_w), 1)
                supcon = jnp.sum(per_head) / (jnp.maximum(n_heads - t - 1, 1) * n_img)
                loss = loss + lambd * jnp.where(not_last, supcon, 0.0)
            if config.future_constraint:
                own = head[None, :] == head[y_u][:, None]
                rows = jnp.concatenate([z_s, z_b])
                good = jnp.concatenate(
                    [jnp.max(jnp.where(cur, z_s, -jnp.inf), 1), jnp.max(jnp.where(own, z_b, -jnp.inf), 1)]
                )  # fmt: skip
                bad = jnp.max(jnp.where(fut, rows, -jnp.inf), axis=1)
                w = jnp.concatenate([jnp.ones(y.shape[0]), first.astype(jnp.float32)])
                d = jnp.where(not_last, bad + config.constr_margin - good, 0.0)
                loss = loss + config.constr_eta * hinge_mean(d, w)
            if config.past_constraint:
                p = jax.nn.softmax(jnp.where(seen, z_s, NEG), axis=-1)
                good = jnp.max(jnp.where(cur, p, 0.0), axis=1)
                bad = jax.lax.stop_gradient(jnp.max(jnp.where(past, p, 0.0), axis=1))
                d = jnp.where(t > 0, bad + config.constr_margin - good, 0.0)
                loss = loss + config.constr_eta * hinge_mean(d, jnp.ones_like(d))
            return loss, (stats, jax.lax.stop_gradient(z_b))

        (loss, (stats, z_u)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
        net = net.apply_gradients(grads=grads, batch_stats=stats)
        # the stored heads t.. of the distinct replayed past items, accepted w.p. 1 / draws
        chosen = first & (head[y_u] < t)
        cap = config.buffer_size
        counter = state.counter.at[jnp.where(chosen, idx, cap)].add(1.0, mode="drop")
        accept = chosen & (jax.random.uniform(k_accept, idx.shape) * counter[idx] < 1)
        new_rows = update_logits(stored_u, z_u, y_u, head >= t, config.gamma)
        logits = buffer.data["logits"].at[jnp.where(accept, idx, cap)].set(new_rows, mode="drop")
        buffer = buffer.replace(data={**buffer.data, "logits": logits})
        return state.replace(net=net, buffer=buffer, counter=counter), {"loss": loss}

    def chunked_outputs(net, x, weight, key, batch_size):
        """The outputs of raw `x` (training transform, batch statistics, running ones kept),
        forwarded in consecutive chunks of `batch_size` (padding of weight 0)."""
        n = x.shape[0]
        n_chunks = -(-n // batch_size)
        pad = n_chunks * batch_size - n
        xs = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]).reshape(
            n_chunks, batch_size, *x.shape[1:]
        )
        ws = jnp.concatenate([weight, jnp.zeros(pad, weight.dtype)]).reshape(n_chunks, batch_size)

        def one(inp):
            xb, wb, k = inp
            out, _ = run(
                net, net.params, input_fn(xb, k, True), net.batch_stats, active=False, weight=wb
            )
            return out

        outs = jax.lax.map(one, (xs, ws, jax.random.split(key, n_chunks)))
        return outs.reshape(n_chunks * batch_size, -1)[:n]

    def end_task(state: State, task: TaskInfo, data, key):
        x, y = (jnp.asarray(a) for a in data)
        y = y.astype(jnp.int32)
        t = task.index
        k = len(task.classes)
        bs = task.batch_size or 32
        k_order, k_fill, k_out, k_mem, k_upd = jax.random.split(key, 5)
        head = jnp.arange(n_col) // k
        net, buffer = state.net, state.buffer
        if t > 0:  # the past classes cut to an equal share of the memory
            buffer = buffer_lib.keep_first_per_group(
                buffer, buffer.data["y"], config.buffer_size // ((t + 1) * k)
            )
        order = jax.random.permutation(k_order, x.shape[0])
        x_o, y_o = x[order], y[order]
        z = chunked_outputs(net, x_o, jnp.ones(x.shape[0]), k_out, bs)
        if t > 0:  # the past heads of a new item rescaled against its own logit
            z = update_logits(z, z, y_o, head < t, config.gamma)
        items = {"x": x_o, "y": y_o, "logits": z}
        buffer = buffer_lib.fill_balanced(buffer, items, task.classes, k_fill, shuffle=False)
        # every past item's heads t.. rewritten from one pass over the memory
        cap = config.buffer_size
        stored = jnp.arange(cap) < buffer.size
        idx, counts = shuffled_batches(stored, k_mem, bs)
        weight = (jnp.arange(bs)[None, :] < counts[:, None]).reshape(-1)
        flat = idx.reshape(-1)
        z_mem = chunked_outputs(net, buffer.data["x"][flat], weight.astype(jnp.float32), k_upd, bs)
        z_all = jnp.zeros((cap, n_col)).at[jnp.where(weight, flat, cap)].set(z_mem, mode="drop")
        old = buffer.data["logits"]
        chosen = stored & (head[buffer.data["y"]] < t)
        updated = update_logits(old, z_all, buffer.data["y"], head >= t, config.gamma)
        logits = jnp.where(chosen[:, None], updated, old)
        buffer = buffer.replace(data={**buffer.data, "logits": logits})
        return state.replace(buffer=buffer, counter=jnp.zeros_like(state.counter))

    def predict_fn(state: State, x):
        return scores(predict(state.net, input_fn(x, None, False)))

    return Method(
        name=name,
        config=config,
        init=init,
        begin_task=begin_task,
        train_step=train_step,
        end_task=end_task,
        predict=predict_fn,
    )


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """X-DER with SGD at `lr`, a class-balanced memory of `buffer_size` written at the end of
    each task, two replayed minibatches of `minibatch_size` a step."""
    config = configure(Config, config, overrides)
    return make_xder("xder", config, model=model, input_fn=input_fn)
