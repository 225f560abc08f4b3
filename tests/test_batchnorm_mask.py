"""BatchNorm over the marked items only: a replay step's padding slots stay out of the batch
statistics, as in PyTorch references that never forward them (issue 47's ER/DER item)."""

import jax
import jax.numpy as jnp
import numpy as np

from cljax.methods.common import _takes_mask
from cljax.models import MLP, ResNet18
from cljax.models.backbones import BatchNorm

X = jax.random.normal(jax.random.key(0), (6, 4, 4, 3)) * 2.0 + 1.0
KEEP = np.array([True, True, False, True, False, True])


def _apply(x, mask=None):
    bn = BatchNorm()
    variables = bn.init(jax.random.key(1), x, False)
    return bn.apply(variables, x, True, mask, mutable=["batch_stats"])


def test_masked_statistics_are_those_of_the_marked_items_alone():
    masked, masked_stats = _apply(X, jnp.asarray(KEEP))
    alone, alone_stats = _apply(X[KEEP])
    np.testing.assert_allclose(masked[KEEP], alone, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(masked_stats), jax.tree.leaves(alone_stats), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # the unbiased running variance too


def test_no_marked_item_falls_back_to_every_item():
    masked, stats = _apply(X, jnp.zeros(6, bool))
    plain, plain_stats = _apply(X)
    np.testing.assert_allclose(masked, plain, rtol=1e-6)
    assert np.isfinite(np.asarray(masked)).all()
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(plain_stats), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_the_resnet_takes_the_mask_and_the_mlp_is_left_alone():
    resnet, mlp = ResNet18(10, nf=4), MLP((8,), 10)
    x = jnp.ones((2, 8, 8, 3))
    assert _takes_mask(resnet.apply) and not _takes_mask(mlp.apply)
    variables = resnet.init(jax.random.key(0), x, False)
    out, _ = resnet.apply(variables, x, True, jnp.array([True, False]), mutable=["batch_stats"])
    assert out.shape == (2, 10)
