"""CIFAR's training transform against torch (issue 47): given the same crop offsets and flip
bits, cljax's `cifar_input` equals torchvision's `RandomCrop(32, padding=4)`,
`RandomHorizontalFlip`, `ToTensor` and `Normalize` with the DER paper's mean and std,
written here with torch's own ops (torchvision does not import beside this torch):
zero padding of the uint8 image, the crop at (top, left), the flip, /255, normalise."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch comparison needs torch (pip install torch)")

from cljax import scenarios  # noqa: E402


def torch_transform(img, top, left, flip, mean, std, pad=4):
    """torchvision's train transforms of the DER framework's CIFAR on one HWC uint8 image."""
    t = torch.from_numpy(img).permute(2, 0, 1)  # CHW uint8, as the PIL image's planes
    h, w = t.shape[1:]
    t = torch.nn.functional.pad(t, (pad, pad, pad, pad))  # RandomCrop's padding, fill 0
    t = t[:, top : top + h, left : left + w]
    if flip:
        t = torch.flip(t, dims=(2,))
    t = t.float() / 255.0  # ToTensor
    t = (t - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return t.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("stats", [scenarios.CIFAR10_STATS, scenarios.TINYIMG_STATS])
def test_cifar_input_is_torchvisions_crop_flip_normalize(stats):
    rng = np.random.default_rng(0)
    size = 32 if stats is scenarios.CIFAR10_STATS else 64
    x = rng.integers(0, 256, (6, size, size, 3), np.uint8)
    key = jax.random.key(3)
    out = np.asarray(scenarios.cifar_input(*stats)(x, key, True))
    # the offsets and flips `cifar_input` drew, from its own keys
    seen_crops, seen_flips = set(), set()
    for i, k in enumerate(jax.random.split(key, len(x))):
        k_crop, k_flip = jax.random.split(k)
        top, left = (int(v) for v in jax.random.randint(k_crop, (2,), 0, 9))
        flip = bool(jax.random.bernoulli(k_flip))
        want = torch_transform(x[i], top, left, flip, *stats)
        np.testing.assert_allclose(out[i], want, rtol=1e-6, atol=1e-6)
        seen_crops.add((top, left))
        seen_flips.add(flip)
    assert len(seen_crops) > 1 and seen_flips == {True, False}  # the draws vary
    # evaluation: normalisation alone
    plain = np.asarray(scenarios.cifar_input(*stats)(x, None, False))
    np.testing.assert_allclose(plain[0], torch_transform(x[0], 4, 4, False, *stats), atol=1e-6)
