"""The types of `dyn_expand`: its `Config`, its state and what `make` builds once (a module
of their own, so that the method's parts import them without importing the method)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax
from flax import struct

from cljax.core import exemplars
from cljax.core.config import Hyperparams, hparam
from cljax.methods.common import NetState


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    """Settings of `dyn_expand` (milestones are kept sorted)."""

    lr: float = hparam(0.05, "SGD step size", gt=0)
    momentum: float = hparam(0.9, "SGD momentum (also of the classifier re-training)", ge=0)
    weight_decay: float = hparam(0.0, "L2 weight decay (not on the mask embeddings)", ge=0)
    buffer_size: int = hparam(500, "exemplars in all, balanced over the classes seen", ge=1)
    per_class: int = hparam(0, "exemplars per class instead (0: use buffer_size)", ge=0)
    minibatch_size: int = hparam(32, "exemplars drawn beside each batch", ge=1)
    aux_weight: float = hparam(1.0, "weight of the auxiliary head's CE", ge=0)
    masks: bool = hparam(True, "learn channel masks and prune (needs the cnn backbone)")
    s_max: float = hparam(400.0, "largest mask-annealing scale s", ge=0)
    sparsity: float = hparam(0.03, "weight of the sparsity loss L_s", ge=0)
    mask_init: float = hparam(1.0, "initial mask embedding of every channel", gt=0)
    mask_grad_scale: float = hparam(100.0, "multiple of the compensated mask gradient", gt=0)
    retrain_epochs: int = hparam(30, "classifier re-training epochs (0: none)", ge=0)
    retrain_lr: float = hparam(0.05, "classifier re-training step size", gt=0)
    retrain_batch: int = hparam(128, "classifier re-training batch size", ge=1)
    temperature: float = hparam(5.0, "re-training logits are divided by it", gt=0)
    warmup_epochs: int = hparam(0, "linear lr warm-up epochs (0: none)", ge=0)
    milestones: tuple[int, ...] = hparam(
        (), "lr x lr_decay at these epochs (counted after the warm-up)", gt=0
    )
    first_milestones: tuple[int, ...] = hparam(
        (), "the first task's own milestones, no warm-up (B50)", gt=0
    )
    lr_decay: float = hparam(0.1, "lr factor at each milestone", gt=0)
    retrain_milestones: tuple[int, ...] = hparam(
        (), "lr x lr_decay at these re-training epochs", gt=0
    )
    retrain_weight_decay: float = hparam(0.0, "L2 weight decay of the re-training", ge=0)
    classifier: str = hparam(
        "official",
        "official: a new classifier and auxiliary head each task (Kaiming normal, no bias), "
        "reset as PyTorch's Linear for the re-training; reused: old rows and bias kept (before "
        "issue 32)",
        choices=("official", "reused"),
    )
    retrain_data: str = hparam(
        "balanced",
        "balanced: the official class-balanced subset of the task's data and the old memory, "
        "augmented batches through the frozen network every epoch; memory: the updated "
        "memory's features computed once (our first version)",
        choices=("balanced", "memory"),
    )

    def head(self, reset: bool = False) -> str:
        """The `head_init` kind of a new head (`reset`: re-initialised mid-task)."""
        if self.classifier == "reused":
            return "lecun"
        return "torch" if reset else "kaiming"

    def check(self) -> None:
        for name in ("milestones", "first_milestones", "retrain_milestones"):
            object.__setattr__(self, name, tuple(sorted(getattr(self, name))))
        if self.masks and self.s_max == 0:
            raise ValueError("dyn_expand s_max must be > 0 with masks=True, got 0.0")

    @classmethod
    def owner(cls) -> str:
        return "dyn_expand"  # the method's name in errors (this module is its types' home)


@struct.dataclass
class DynState:
    """Trainable part (`net`: new extractor, its mask embeddings, classifier, auxiliary head),
    the frozen earlier extractors, the exemplar memory and the class bookkeeping."""

    net: NetState
    old: tuple  # ({"params", "batch_stats"}, ...) of tasks 0..t-1, frozen and pruned
    memory: exemplars.Memory
    seen: jax.Array  # (C,) classes of tasks 0..t
    current: jax.Array  # (C,) classes of task t
    steps_per_epoch: jax.Array  # int32 (); the mask annealing restarts every epoch
    # with masks: the newest extractor's params before pruning, where the next one starts
    unpruned: dict | tuple = ()


class Parts(NamedTuple):
    """What `make` builds once."""

    base: Any  # the backbone without its head: the feature extractor copied every task
    tx: optax.GradientTransformation  # of the extractor, masks and heads
    retrain_tx: optax.GradientTransformation  # of the re-trained classifier
    input_fn: Callable
    num_classes: int
    capacity: int  # exemplars in all
