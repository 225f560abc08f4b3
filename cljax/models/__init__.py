"""The networks: classifier backbones (`backbones`), GAN pairs (`gan`), and the pieces the
methods with networks of their own build from (DGM's masked generator, DynaER's extractors).

`make(name, num_classes, dtype)` builds a backbone by name (one of `MODELS`).
"""

from cljax.models.backbones import (
    DTYPES,
    MLP,
    MODELS,
    BasicBlock,
    Conv3x3,
    ConvNet,
    ResNet18,
    make,
)

__all__ = ["DTYPES", "MLP", "MODELS", "BasicBlock", "Conv3x3", "ConvNet", "ResNet18", "make"]
