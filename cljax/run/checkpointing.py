"""A run's checkpoints: written behind training (orbax's thread), waited for before the next
one, read back on resume with damaged newer steps set aside; one error type for a write
that failed, naming the checkpoint and what to do."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from cljax.run import checkpoint_io as ckpt_lib

log = logging.getLogger("cljax.train")


class Checkpoints:
    """The checkpoints of one run in `workdir` (None: none are written)."""

    def __init__(self, workdir: Path | None):
        self.workdir = workdir
        self.manager = ckpt_lib.manager(workdir) if workdir is not None else None
        self.writing = None  # what orbax is writing behind training, if any
        self.last_save = time.perf_counter()

    @property
    def enabled(self) -> bool:
        return self.manager is not None

    def latest(self) -> int | None:
        """The newest checkpoint's step, or None."""
        return None if self.manager is None else self.manager.latest_step()

    def due(self, every_s: float, requested: bool) -> bool:
        """Whether a mid-task checkpoint is due (every host agrees, on host 0's clock)."""
        due = requested or time.perf_counter() - self.last_save >= every_s
        if self.manager is not None and jax.process_count() > 1:  # orbax saves with every host
            due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))
        return due

    def save(self, step: int, what: str, state, acc: dict, meta: dict) -> None:
        """Starts writing `state`, `acc` and `meta` as checkpoint `step` (`what`: its name in
        an error); the files are written behind the next steps."""
        self.finish()  # the one before, whose failure is its own
        try:
            ckpt_lib.save(self.manager, step, state, acc, meta, wait=False)
        except Exception as e:  # a full disk, a folder gone: orbax raises many types
            raise self.write_error(what, e) from e
        self.writing = what
        self.last_save = time.perf_counter()

    def finish(self) -> None:
        """Waits for the checkpoint being written, if any (a CheckpointWriteError if it failed)."""
        what, self.writing = self.writing, None
        if what is not None:
            try:
                self.manager.wait_until_finished()
            except Exception as e:
                raise self.write_error(what, e) from e

    def write_error(self, what: str, e: Exception) -> ckpt_lib.CheckpointWriteError:
        return ckpt_lib.CheckpointWriteError(
            f"could not write the checkpoint of {what} in {self.manager.directory} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); the earlier "
            "checkpoints are kept: free space or fix the folder, then rerun with --resume"
        )

    def restore(self, structure_of, acc: dict, identity: dict, mesh):
        """`(state, acc, meta)` of the newest readable checkpoint made by the same run
        (`identity`); unreadable newer ones are moved aside, so their steps can be rewritten."""
        replicated = NamedSharding(mesh, PartitionSpec())
        state, acc, saved, skipped = ckpt_lib.restore(
            self.manager, structure_of, acc, identity, replicated
        )
        if skipped:
            aside = self.workdir / "damaged-checkpoints"
            for step, why in skipped:
                log.warning("skipped checkpoint %d in %s: %s", step, self.manager.directory, why)
            if jax.process_index() == 0:
                ckpt_lib.set_aside(self.manager, [step for step, _ in skipped], aside)
            log.warning(
                "resuming from the newest readable checkpoint; the unreadable ones moved to %s",
                aside,
            )
        return state, acc, saved
