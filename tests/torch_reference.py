"""A PyTorch reference of the reduced ResNet-18, and a converter of its weights to cljax's.

The network is the DER paper's framework's (Mammoth, `backbone/ResNet18.py`): a 3x3 stem
of `nf` channels (stride 1, no max-pool), four stages of two basic blocks at `nf` x 1, 2,
4, 8 channels, stride 2 at the first block of stages 2-4, a 1x1 convolution of stride
`s` plus BatchNorm as the shortcut where the shape changes, no convolution bias, ReLU,
global average pooling and a linear head. Written with torch's own `nn.Conv2d`,
`nn.BatchNorm2d` and `nn.Linear` at their default settings and initialisation, so that
torch's primitives are the ground truth in `tests/test_torch_equivalence.py`.

Only those tests import this module, after `pytest.importorskip("torch")`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)  # 2 threads collapse when the other core is busy (NOTES-STACK)

_margins: list[float] | None = None


def relu(x):
    """`F.relu`, noting its smallest |input| while `relu_margins()` records."""
    if _margins is not None:
        _margins.append(float(x.detach().abs().min()))
    return F.relu(x)


@contextlib.contextmanager
def relu_margins():
    """Records the smallest |input| of every ReLU run inside it (a list, in call order).

    A ReLU input within float32 rounding of 0 may have opposite signs in two frameworks;
    where a BatchNorm channel has few values (8 images at 4 x 4), that one flip moves the
    channel's gradient by percents, and two training runs part from there.
    """
    global _margins
    _margins = []
    try:
        yield _margins
    finally:
        _margins = None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm; a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """Mammoth's `resnet18(nclasses, nf)`: NCHW inputs, logits out."""

    def __init__(self, num_classes: int, nf: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, nf, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(nf)
        in_planes, layers = nf, []
        for i, mult in enumerate((1, 2, 4, 8)):
            blocks = []
            for b in range(2):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(BasicBlock(in_planes, nf * mult, stride))
                in_planes = nf * mult
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(nf * 8, num_classes)

    def blocks(self):
        """The eight basic blocks in order (cljax's `BasicBlock_0` ... `BasicBlock_7`)."""
        return [b for layer in (self.layer1, self.layer2, self.layer3, self.layer4) for b in layer]

    def features(self, x):
        """The input of the linear head (Mammoth's `features`): pooled, flattened."""
        out = relu(self.bn1(self.conv1(x)))
        for block in self.blocks():
            out = block(out)
        out = F.avg_pool2d(out, out.shape[2])
        return out.flatten(1)

    def forward(self, x):
        return self.linear(self.features(x))


def _layers(model):
    """`(cljax path, torch module)` of every convolution, BatchNorm and the linear head of
    `model`, this module's `ResNet18` or Mammoth's own (the same attribute names)."""
    yield ("Conv_0",), model.conv1
    yield ("BatchNorm_0",), model.bn1
    layers = (model.layer1, model.layer2, model.layer3, model.layer4)
    for i, block in enumerate(b for layer in layers for b in layer):
        name = f"BasicBlock_{i}"
        yield (name, "Conv_0"), block.conv1
        yield (name, "BatchNorm_0"), block.bn1
        yield (name, "Conv_1"), block.conv2
        yield (name, "BatchNorm_1"), block.bn2
        if len(block.shortcut):
            yield (name, "Conv_2"), block.shortcut[0]
            yield (name, "BatchNorm_2"), block.shortcut[1]
    yield ("Dense_0",), model.linear


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _set(tree: dict, path, leaf: dict):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = leaf


def _convert(model: ResNet18, grads: bool, value=None):
    params, stats = {}, {}
    value = value or ((lambda p: _np(p.grad)) if grads else _np)
    for path, m in _layers(model):
        if isinstance(m, nn.Conv2d):  # OIHW -> HWIO
            _set(params, path, {"kernel": value(m.weight).transpose(2, 3, 1, 0)})
        elif isinstance(m, nn.BatchNorm2d):
            _set(params, path, {"scale": value(m.weight), "bias": value(m.bias)})
            _set(stats, path, {"mean": _np(m.running_mean), "var": _np(m.running_var)})
        else:  # Linear: (out, in) -> (in, out)
            _set(params, path, {"kernel": value(m.weight).T, "bias": value(m.bias)})
    return params, stats


def to_cljax(model: ResNet18) -> dict:
    """The variables of cljax's `resnet18` holding `model`'s weights and running statistics:
    kernels OIHW -> HWIO, the linear weight transposed, BatchNorm weight/bias ->
    scale/bias and running_mean/running_var -> mean/var."""
    params, stats = _convert(model, grads=False)
    return {"params": params, "batch_stats": stats}


def grads_to_cljax(model: ResNet18) -> dict:
    """The `.grad` of `model`'s parameters laid out as cljax's `params`."""
    return _convert(model, grads=True)[0]


def params_to_cljax(model: ResNet18, values: dict) -> dict:
    """`values` (a tensor for each of `model`'s parameters, keyed by the parameter's name in
    `model.named_parameters()`: a Fisher, an anchor) laid out as cljax's `params`."""
    names = {id(p): name for name, p in model.named_parameters()}
    return _convert(model, False, lambda p: _np(values[names[id(p)]]))[0]


def nchw(x) -> torch.Tensor:
    """A cljax NHWC batch as a torch NCHW float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def ce_step(model: ResNet18, opt: torch.optim.Optimizer, x, y) -> float:
    """One training-mode step of `opt` on the mean cross-entropy of NHWC `x`, labels `y`."""
    model.train()
    opt.zero_grad()
    loss = F.cross_entropy(model(nchw(x)), torch.as_tensor(np.array(y), dtype=torch.long))
    loss.backward()
    opt.step()
    return float(loss.detach())
