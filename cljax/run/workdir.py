"""A run's folder: checked before training, held by one run at a time, its files written whole.

- `check(path, needed_bytes)`: the folder can be made and written, and has room for a
  checkpoint; otherwise a one-line `WorkdirError` before anything is trained.
- `Lock(path)`: `path/.lock` holds the pid, host and start time of the run using the
  folder. A second run into it is refused with a line naming the holder; a lock whose
  process is gone (same host, pid not running) is taken over with a warning.
- `replaced(path)`: a temporary file in the same folder, renamed onto `path` only once
  it is complete, so `results.json` and the plots are never half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

LOCK = ".lock"


class WorkdirError(Exception):
    """The run's folder cannot be used (printed as one line; exit code 2)."""


def _existing_ancestor(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path("/")


def check(path, needed_bytes: int = 0) -> None:
    """Raises `WorkdirError` unless `path` is (or can be made) a writable folder with
    `needed_bytes` free."""
    path = Path(path)
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise WorkdirError(f"--workdir {path}: {base} is a file, not a folder; choose another")
    if not os.access(base, os.W_OK | os.X_OK):
        where = "it" if base == path else f"{base}"
        raise WorkdirError(f"--workdir {path}: cannot write into {where}; choose another folder")
    free = shutil.disk_usage(base).free
    if free < needed_bytes:
        raise WorkdirError(
            f"--workdir {path}: {free / 2**20:.0f} MiB free, a checkpoint needs about "
            f"{needed_bytes / 2**20:.0f} MiB; free some space or choose another folder"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _when(info: dict) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))


class Lock:
    """`path/.lock` for the lifetime of a run (a context manager; `acquire`/`release`)."""

    def __init__(self, path):
        self.path = Path(path) / LOCK
        self.held = False

    def _write(self) -> bool:
        """Creates the lock file atomically; False when it exists."""
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        return True

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def refuse_if_held(self) -> dict:
        """Raises `WorkdirError` naming the holder when a live run holds the lock; returns the
        lock's contents ({} when there is none) otherwise. Writes nothing."""
        if not self.path.exists():
            return {}
        info = self.holder()
        if info is None:  # being written this instant, or left empty by a crash: look again
            time.sleep(0.5)
            info = self.holder() or {}
        host, pid = info.get("host"), info.get("pid")
        stale = host == socket.gethostname() and isinstance(pid, int) and not _alive(pid)
        if not stale:
            raise WorkdirError(
                f"{self.path.parent} is in use by pid {pid} on {host} since {_when(info)}; wait "
                f"for that run to end or choose another --workdir (delete {self.path} if it is gone)"
            )
        return info

    def acquire(self, warn=print) -> Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._write():
            self.held = True
            return self
        info = self.refuse_if_held()
        warn(
            f"warning: taking over {self.path}: its run (pid {info.get('pid')}, "
            f"started {_when(info)}) is gone"
        )
        self.path.unlink(missing_ok=True)
        if not self._write():
            raise WorkdirError(f"{self.path.parent} was taken by another run just now")
        self.held = True
        return self

    def release(self) -> None:
        if self.held and (self.holder() or {}).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


@contextlib.contextmanager
def replaced(path):
    """Yields a temporary path beside `path` (same suffix); on success it replaces `path`,
    on failure it is removed and `path` is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
