"""Per-task orbax checkpoints of a run: the (seed-stacked) state, accuracies and metadata."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


def manager(workdir) -> ocp.CheckpointManager:
    """A manager over `WORKDIR/checkpoints` keeping the last two tasks' checkpoints."""
    directory = Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(directory, options=options, item_names=("tree", "meta"))


def save(mgr: ocp.CheckpointManager, step: int, state, acc: dict, meta: dict):
    """Saves after task `step`; `meta` must be JSON-serialisable.

    The state's leaf shapes go into `meta` too: a growing or pruned state is
    restored into the shapes it was saved with.
    """
    tree = {"state": state, "acc": {k: np.asarray(v) for k, v in acc.items()}}
    meta = {**meta, "state_shapes": [list(np.shape(a)) for a in jax.tree.leaves(state)]}
    mgr.save(
        step,
        args=ocp.args.Composite(tree=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
    )
    mgr.wait_until_finished()


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, or made by a different run."""


def restore(mgr: ocp.CheckpointManager, structure_of, acc_like: dict, identity: dict, sharding):
    """`(state, acc, meta)` of the latest checkpoint.

    `structure_of(meta)` gives a state of the saved tree structure (arrays or
    `jax.ShapeDtypeStruct`s); its leaves take the shapes saved in `meta`.
    `identity` (method, benchmark, seeds, hyperparameters) must equal the one
    saved with the checkpoint, or resuming would silently mix two runs. The
    state's arrays are placed with `sharding`.
    """
    where = mgr.directory
    step = mgr.latest_step()
    try:
        meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for damaged files
        raise CheckpointError(
            f"checkpoint {step} in {where} is unreadable ({type(e).__name__}); "
            "rerun with --overwrite to start again"
        ) from e
    saved = meta.get("run")
    if saved != identity:
        diff = sorted(k for k in identity if saved is None or saved.get(k) != identity[k])
        raise CheckpointError(
            f"checkpoint in {where} was made by a different run (differs in: "
            f"{', '.join(diff)}); resume with the same settings, or use --overwrite"
        )
    leaves, treedef = jax.tree.flatten(structure_of(meta))
    shapes = meta.get("state_shapes", [np.shape(a) for a in leaves])
    if len(shapes) != len(leaves):
        raise CheckpointError(
            f"checkpoint {step} in {where} holds a state of another structure; "
            "rerun with --overwrite to start again"
        )
    state_like = treedef.unflatten(
        [
            jax.ShapeDtypeStruct(tuple(s), a.dtype, sharding=sharding)
            for a, s in zip(leaves, shapes, strict=True)
        ]
    )
    acc_abstract = {k: ocp.utils.to_shape_dtype_struct(np.asarray(v)) for k, v in acc_like.items()}
    abstract = {"state": state_like, "acc": acc_abstract}
    try:
        got = mgr.restore(step, args=ocp.args.Composite(tree=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # orbax raises many types for damaged files
        raise CheckpointError(
            f"checkpoint {step} in {where} is unreadable ({type(e).__name__}); "
            "rerun with --overwrite to start again"
        ) from e
    acc = {k: np.array(v) for k, v in got["tree"]["acc"].items()}
    return got["tree"]["state"], acc, meta
