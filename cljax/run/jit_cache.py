"""JAX's persistent compilation cache, on by default for the `cljax` command.

On a CPU most of a short run is XLA compiling the task programs (a DER++ run on
Seq-MNIST: about 9 s of compiles to 11 s of training). With the cache, a second run
of the same command (same method, shapes, settings, jax version and machine) loads
each executable from disk instead: the very program the first compile produced, so
results are bit-identical.

Where: `--compile-cache DIR`, else `$CLJAX_CACHE_DIR/jit`, else
`$XDG_CACHE_HOME/cljax/jit` (default `~/.cache/cljax/jit`); off with
`--no-compile-cache`. A `JAX_COMPILATION_CACHE_DIR` set by the user wins over all
of these (JAX reads it itself). Every program is cached, however fast its compile
(the run's dozens of small eager-op compiles add up to seconds), and the folder is
kept under `MAX_BYTES` by JAX, least recently used first. A folder that cannot be
written is reported in one line and the run goes on without the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

MAX_BYTES = 2 * 2**30


def default_folder() -> Path:
    """Where compiled programs are kept by default: `$CLJAX_CACHE_DIR/jit`, else
    `~/.cache/cljax/jit`."""
    if os.environ.get("CLJAX_CACHE_DIR"):
        return Path(os.environ["CLJAX_CACHE_DIR"]) / "jit"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cljax" / "jit"


def enable(folder: str | Path | None = None) -> str | None:
    """Turns the cache on in `folder` (default `default_folder()`); returns None, or a
    one-line warning when the folder cannot be written (the cache then stays off)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None  # the user's choice, read by JAX
    folder = Path(folder) if folder is not None else default_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return f"compile cache off: cannot write {folder} ({e.strerror or e}); see --compile-cache"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return None
