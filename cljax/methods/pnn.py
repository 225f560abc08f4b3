"""Progressive Neural Networks (`pnn`): Rusu et al., 2016, as the DER paper ran it (Mammoth's
`models/pnn.py` and `backbone/MNISTMLP_PNN.py` of the paper's release, commit 7ab9db9).

One column per task: a copy of the MLP backbone (`hidden` ReLU layers and an
output layer over every class), trained on its task alone by SGD on the
cross-entropy; the columns of earlier tasks are frozen. Column k's layer i
(i >= 1: the second hidden layer on, and the output layer) adds a lateral
connection from layer i-1 of every earlier column j < k (the paper's eq. 2 with
its non-linear adapters, as Mammoth builds them):

    h_i^k = relu(W_i^k h_{i-1}^k + U_i^k relu(V_i^k (a_i^k * [h_{i-1}^j]_{j<k})))

(the output layer without the relu), with `a` a learned scale per input unit
(initialised U(0, 0.1), Mammoth's `AlphaModule`), `V` a dense layer with bias to
the layer's width (100), `U` one without bias. Task-IL only: a test image of task
t goes through column t. `predict` returns, for every class, the logit of the
column of the task the class belongs to, so the task-IL evaluation (the logits
of task t's classes) reads exactly column t; the class-IL number the driver
also reports has no meaning for this method (the paper reports none).

A column grows the state's shapes, so each task compiles its own program (as
`dyn_expand`'s extractors do). Runs on the `mlp` backbone only, as Mammoth's
MNIST PNN (its ResNet PNN is not built here).

Where this deviates from Mammoth, and why:
- Mammoth's `MNISTMLP_PNN` builds the adapters but its `forward` tests an
  attribute (`self.old_cols`) that is always empty, so its columns never use
  them: the DER paper's PNN row comes from independent columns, each trained
  from scratch on its task (this is so in Mammoth's code to date). We follow the
  paper and use the laterals; `laterals=False` gives Mammoth's independent
  columns (its row is measured both ways in experiments/results/der_table.md).
- With laterals, earlier columns' activations are those of the full columns,
  laterals included (the paper's recursion); Mammoth's adapters would read the
  old columns' layers without their own laterals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from cljax import models
from cljax.core.config import Hyperparams, hparam
from cljax.methods import Method, Needs, TaskInfo, configure
from cljax.methods.common import cross_entropy

_xavier = nn.initializers.xavier_uniform()


def _alpha_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, 0.0, 0.1)  # Mammoth's AlphaModule


@dataclasses.dataclass(frozen=True)
class Config(Hyperparams):
    """Settings of `pnn`."""

    lr: float = hparam(0.1, "SGD step size of each new column", gt=0)
    laterals: bool = hparam(
        True, "lateral adapters from earlier columns (False: Mammoth's independent columns)"
    )
    adapter_width: int = hparam(100, "width of each lateral adapter's hidden layer", ge=1)


class Lateral(nn.Module):
    """The paper's non-linear adapter: `U relu(V (alpha * a))`."""

    width: int
    features: int

    @nn.compact
    def __call__(self, a):
        alpha = self.param("alpha", _alpha_init, (a.shape[-1],))
        hidden = nn.relu(nn.Dense(self.width, kernel_init=_xavier)(a * alpha))
        return nn.Dense(self.features, use_bias=False, kernel_init=_xavier)(hidden)


class Column(nn.Module):
    """One column: `hidden` ReLU layers and an output layer, with laterals from `earlier`
    columns (`earlier` > 0). Returns `(logits, [each hidden layer's activations])`."""

    hidden: Sequence[int]
    num_classes: int
    earlier: int = 0
    adapter_width: int = 100

    @nn.compact
    def __call__(self, x, lateral_inputs=None):
        h = x.reshape((x.shape[0], -1))
        acts = []
        widths = (*self.hidden, self.num_classes)
        for i, width in enumerate(widths):
            z = nn.Dense(width, kernel_init=_xavier)(h)
            if i > 0 and self.earlier > 0:
                z = z + Lateral(self.adapter_width, width)(lateral_inputs[i - 1])
            if i < len(self.hidden):
                h = nn.relu(z)
                acts.append(h)
        return z, acts


@struct.dataclass
class PnnState:
    """Every column's parameters (the last one trains), its optimizer state, and the column
    that scores each class (-1: none yet)."""

    columns: tuple
    opt_state: optax.OptState
    owner: jax.Array  # (C,) int32


TEST_MODEL = "mlp"  # the contract tests' backbone: the columns copy an MLP's widths


def _backbone(model):
    if not isinstance(model, models.MLP):
        raise ValueError(
            f"pnn builds its columns from the mlp backbone, not {type(model).__name__}; "
            "run it with model=mlp"
        )
    return tuple(model.hidden), model.num_classes


def make(config: Config | None = None, *, model, input_fn, **overrides) -> Method:
    """PNN with one column per task, SGD at `lr`."""
    config = configure(Config, config, overrides)
    hidden, num_classes = _backbone(model)
    tx = optax.sgd(config.lr)

    def column(k: int) -> Column:
        return Column(hidden, num_classes, k if config.laterals else 0, config.adapter_width)

    def outputs(columns, x):
        """Every column's logits `(K, N, C)` on prepared inputs `x`."""
        acts, outs = [], []
        for k, params in enumerate(columns):
            lateral = None
            if k > 0 and config.laterals:
                lateral = [jnp.concatenate([a[i] for a in acts], -1) for i in range(len(hidden))]
            out, h = column(k).apply({"params": params}, x, lateral)
            acts.append(h)
            outs.append(out)
        return jnp.stack(outs)

    def new_column(key, k: int, x):
        lateral = None
        if k > 0 and config.laterals:
            lateral = [jnp.zeros((x.shape[0], k * w), x.dtype) for w in hidden]
        return column(k).init(key, x, lateral)["params"]

    def init(key, example_x):
        first = new_column(key, 0, input_fn(example_x, key, False))
        owner = -jnp.ones(num_classes, jnp.int32)
        return PnnState(columns=(first,), opt_state=tx.init(first), owner=owner)

    def begin_task(state: PnnState, task: TaskInfo, key) -> PnnState:
        """From the second task: a new column (the others frozen); the task's classes are
        scored by the task's column."""
        owned = [c for c in task.classes if task.seen.count(c) > 1]
        if owned:
            raise ValueError(
                f"pnn needs each task's own classes (task-IL); task {task.index + 1} repeats "
                f"classes {owned} of an earlier task (a domain-IL benchmark)"
            )
        columns = state.columns
        if task.index > 0:
            k = len(columns)
            example = jnp.zeros((1, *_input_shape(columns[0])), jnp.float32)
            columns = (*columns, new_column(key, k, example))
        owner = state.owner.at[jnp.asarray(task.classes)].set(len(columns) - 1)
        return PnnState(columns=columns, opt_state=tx.init(columns[-1]), owner=owner)

    def train_step(state: PnnState, batch, key):
        x = input_fn(batch["x"], key, True)
        frozen = jax.lax.stop_gradient(state.columns[:-1])

        def loss_fn(params):
            logits = outputs((*frozen, params), x)[-1]
            return cross_entropy(logits, batch["y"]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.columns[-1])
        updates, opt_state = tx.update(grads, state.opt_state, state.columns[-1])
        last = optax.apply_updates(state.columns[-1], updates)
        return state.replace(columns=(*state.columns[:-1], last), opt_state=opt_state), {
            "loss": loss
        }

    def predict(state: PnnState, x):
        """Class c's logit from the column of its task (the newest column for unseen ones)."""
        outs = outputs(state.columns, input_fn(x, None, False))  # (K, N, C)
        owner = jnp.where(state.owner < 0, len(state.columns) - 1, state.owner)
        return jnp.take_along_axis(outs, owner[None, None, :], axis=0)[0]

    return Method(
        name="pnn",
        config=config,
        needs=Needs(settings=("task-il",)),  # scored only with the task's identity
        init=init,
        train_step=train_step,
        predict=predict,
        begin_task=begin_task,
    )


def _input_shape(first_column) -> tuple[int, ...]:
    """The flat input size the columns were built for (the first dense layer's fan-in)."""
    return (first_column["Dense_0"]["kernel"].shape[0],)
