"""The networks of `dyn_expand` (`cljax.methods.dyn_expand`): feature extractors and heads.

Every task adds a copy of a backbone's feature extractor (`base`: the backbone
without its head; a `ConvNet` is rebuilt at the widths its pruned params have);
the classifier and the auxiliary head are plain linear layers (`dense_init`,
`dense`) on the "super feature" `[phi_1(x); ...; phi_t(x)]`. `sparsity_loss` is
the paper's L_s over the newest extractor's channel masks.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cljax.core import masks as masks_lib
from cljax.models.backbones import ConvNet

NEG = -1e9  # logit of classes not yet seen (finite: 0 * log-softmax stays 0)


def dense_init(key, d_in, d_out):
    """A linear layer's params `{"kernel": (d_in, d_out), "bias": (d_out,)}` (LeCun normal)."""
    return {
        "kernel": nn.initializers.lecun_normal()(key, (d_in, d_out)),
        "bias": jnp.zeros(d_out),
    }


HEAD_INITS = {
    # the DER code's _gen_classifier: nn.init.kaiming_normal_(nonlinearity="linear"), no bias
    "kaiming": nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
    # PyTorch's nn.Linear.reset_parameters: U(-1/sqrt(d_in), 1/sqrt(d_in)), no bias here
    "torch": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
}


def head_init(kind: str, key, d_in, d_out):
    """A classifier's params: `kind` "lecun" is `dense_init` (with bias); "kaiming" and
    "torch" (`HEAD_INITS`) have no bias, as the official code's classifiers."""
    if kind == "lecun":
        return dense_init(key, d_in, d_out)
    return {"kernel": HEAD_INITS[kind](key, (d_in, d_out))}


def dense(p, x):
    """A linear layer, with bias when `p` has one."""
    out = x @ p["kernel"]
    return out + p["bias"] if "bias" in p else out


def extractor_for(base, params):
    """The module that applies `params`: `base`, or for a `ConvNet` one at the (possibly pruned)
    widths of `params`."""
    if isinstance(base, ConvNet):
        widths = tuple(params[f"conv{i}"]["kernel"].shape[-1] for i in range(len(base.widths)))
        return base.clone(widths=widths)
    return base


def extract(base, params, stats, x, train=False, channel_masks=None):
    """Features of `x` and the BatchNorm statistics (updated when training)."""
    module = extractor_for(base, params)
    variables = {"params": params, **({"batch_stats": stats} if stats else {})}
    kwargs = {} if channel_masks is None else {"masks": channel_masks}
    if stats and train:
        out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"], **kwargs)
        return out, updates["batch_stats"]
    return module.apply(variables, x, train=train, **kwargs), stats


def feature_dim(base, params, stats, x) -> int:
    """The feature width of the extractor with `params`."""
    return jax.eval_shape(lambda: extract(base, params, stats, x)[0]).shape[-1]


def old_features(base, old, x):
    """Features of the frozen extractors `old` (`({"params", "batch_stats"}, ...)`), no gradient."""
    feats = [extract(base, o["params"], o["batch_stats"], x)[0] for o in old]
    return [jax.lax.stop_gradient(f) for f in feats]


def super_features(base, params, stats, old, x, masks: bool):
    """Inference features `[phi_1(x); ...; phi_t(x)]`: the frozen extractors `old`, then the
    newest (`params["new"]`, BatchNorm `stats`) with its masks `params["emb"]` binarised."""
    m = tuple(masks_lib.binary(e) for e in params["emb"]) if masks else None
    new, _ = extract(base, params["new"], stats, x, False, m)
    return jnp.concatenate([*old_features(base, old, x), new], -1)


def chunked(fn, x_raw, chunk=500):
    """`fn` (a batch to a `(batch, d)` array) over `x_raw`, `chunk` items at a time."""
    n = x_raw.shape[0]
    pad = -n % chunk
    xp = jnp.concatenate([x_raw, jnp.zeros((pad, *x_raw.shape[1:]), x_raw.dtype)])
    f = jax.lax.map(fn, xp.reshape(-1, chunk, *x_raw.shape[1:]))
    return f.reshape(n + pad, -1)[:n]


def sparsity_loss(channel_masks, in_channels):
    """The paper's L_s: used kernel connections over all, 3x3 kernels (K_l = 9)."""
    sizes = [jnp.asarray(float(in_channels))] + [jnp.sum(m) for m in channel_masks]
    totals = [float(in_channels)] + [float(m.shape[0]) for m in channel_masks]
    used = sum(9.0 * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    full = sum(9.0 * a * b for a, b in zip(totals[:-1], totals[1:], strict=True))
    return used / full
