"""Orbax checkpoints of a run: the (seed-stacked) state, accuracies and metadata.

One after every task, and (for long tasks) others after a chunk of a task's
steps. Their orbax step numbers order them in the run (`step_of`); what a
checkpoint holds is read from its metadata (`task`, and `chunk` mid-task).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

if TYPE_CHECKING:
    import orbax.checkpoint as ocp


def _ocp():
    """orbax.checkpoint, imported on first use (0.2-0.5 s: runs without a workdir skip it)."""
    import orbax.checkpoint

    return orbax.checkpoint


def _args():
    return _ocp().args


def manager(workdir) -> ocp.CheckpointManager:
    """A manager over `WORKDIR/checkpoints` keeping the last two checkpoints."""
    directory = Path(workdir).absolute() / "checkpoints"
    options = _ocp().CheckpointManagerOptions(max_to_keep=2, create=True)
    return _ocp().CheckpointManager(directory, options=options, item_names=("tree", "meta"))


MID_TASK = 1_000_000  # chunks a task can have; a task's checkpoints sort before the next task's


def step_of(task: int, chunk: int | None = None) -> int:
    """The orbax step of the checkpoint after `chunk` of `task`, or after the whole task.

    Later in the run is a larger number, so the manager's latest step is the
    one to resume from (runs checkpointed before mid-task checkpoints existed
    numbered tasks 0, 1, ...: smaller than any number here but the first
    task's, which they cannot meet, as a resumed run starts after them).
    """
    return task * MID_TASK + (MID_TASK - 1 if chunk is None else chunk)


def save(mgr: ocp.CheckpointManager, step: int, state, acc: dict, meta: dict, wait=True):
    """Saves as orbax step `step` (`step_of`); `meta` must be JSON-serialisable.

    The state's leaf shapes go into `meta` too: a growing or pruned state is
    restored into the shapes it was saved with. `wait=False` returns once the
    arrays are copied to the host, the files written by orbax's thread behind
    training: `mgr.wait_until_finished()` raises what that write met (orbax
    waits for it before the next save, and writes each checkpoint to a temporary
    folder it renames when complete, so a stopped write leaves no checkpoint).
    """
    tree = {"state": state, "acc": {k: np.array(v) for k, v in acc.items()}}
    meta = {**meta, "state_shapes": [list(np.shape(a)) for a in jax.tree.leaves(state)]}
    mgr.save(
        step,
        args=_args().Composite(tree=_args().StandardSave(tree), meta=_args().JsonSave(meta)),
    )
    if wait:
        mgr.wait_until_finished()


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, folder gone); the older ones are kept."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, or made by a different run."""


def restore(mgr: ocp.CheckpointManager, structure_of, acc_like: dict, identity: dict, sharding):
    """`(state, acc, meta, skipped)` of the newest readable checkpoint.

    Checkpoints are tried from newest to oldest: one that cannot be read (damaged
    files, a different tree) is skipped and named in `skipped` (`[(step, reason)]`,
    newest first); only when none is readable is it a `CheckpointError`.
    `structure_of(meta)` gives a state of the saved tree structure (arrays or
    `jax.ShapeDtypeStruct`s); its leaves take the shapes saved in `meta`.
    `identity` (method, benchmark, seeds, hyperparameters) must equal the one
    saved with the checkpoint, or resuming would silently mix two runs: that is an
    error at once, not a reason to try an older one. The state's arrays are placed
    with `sharding`.
    """
    skipped = []
    for step in sorted(mgr.all_steps(), reverse=True):
        try:
            return (*_restore_step(mgr, step, structure_of, acc_like, identity, sharding), skipped)
        except _Unreadable as e:
            skipped.append((step, str(e)))
    reasons = "; ".join(f"{step}: {why}" for step, why in skipped) or "none found"
    raise CheckpointError(
        f"no checkpoint in {mgr.directory} is readable ({reasons}); "
        "rerun with --overwrite to start again"
    )


class _Unreadable(Exception):
    """One checkpoint cannot be read (the reason is the message)."""


def _restore_step(mgr, step: int, structure_of, acc_like: dict, identity: dict, sharding):
    """`(state, acc, meta)` of checkpoint `step`; `_Unreadable` when it cannot be read."""
    where = mgr.directory
    try:
        meta = mgr.restore(step, args=_args().Composite(meta=_args().JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many types for damaged files
        raise _Unreadable(f"metadata unreadable ({type(e).__name__})") from e
    if not isinstance(meta, dict):
        raise _Unreadable("metadata is not a JSON object")
    saved = meta.get("run")
    if saved != identity:
        diff = sorted(k for k in identity if saved is None or saved.get(k) != identity[k])
        raise CheckpointError(
            f"checkpoint in {where} was made by a different run (differs in: "
            f"{', '.join(diff)}); resume with the same settings, or use --overwrite"
        )
    try:
        leaves, treedef = jax.tree.flatten(structure_of(meta))
    except Exception as e:  # metadata that parses but names no task the run has
        raise _Unreadable(f"metadata inconsistent ({type(e).__name__})") from e
    shapes = meta.get("state_shapes", [np.shape(a) for a in leaves])
    if len(shapes) != len(leaves):
        raise _Unreadable("holds a state of another structure")
    state_like = treedef.unflatten(
        [
            jax.ShapeDtypeStruct(tuple(s), a.dtype, sharding=sharding)
            for a, s in zip(leaves, shapes, strict=True)
        ]
    )
    acc_abstract = {
        k: _ocp().utils.to_shape_dtype_struct(np.asarray(v)) for k, v in acc_like.items()
    }
    abstract = {"state": state_like, "acc": acc_abstract}
    try:
        got = mgr.restore(step, args=_args().Composite(tree=_args().StandardRestore(abstract)))
    except Exception as e:  # orbax raises many types for damaged files
        raise _Unreadable(f"arrays unreadable ({type(e).__name__})") from e
    acc = {k: np.array(v) for k, v in got["tree"]["acc"].items()}
    return got["tree"]["state"], acc, meta


def set_aside(mgr: ocp.CheckpointManager, steps, folder: Path) -> None:
    """Moves checkpoints `steps` (skipped as unreadable) into `folder` and reloads `mgr` so it
    no longer sees them: the resumed run can write those steps afresh."""
    folder.mkdir(parents=True, exist_ok=True)
    for step in steps:
        target = folder / str(step)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(Path(mgr.directory) / str(step)), target)
    mgr.reload()
