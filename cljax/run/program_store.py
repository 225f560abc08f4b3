"""The compiled task programs of a run kept on disk by what determines them, so that the same
command run again loads them without tracing or lowering.

JAX's persistent compilation cache (`cljax.run.jit_cache`) is keyed by the lowered program:
a warm run still traces every task program to a jaxpr and lowers it to MLIR before it can
look the executable up (about 3 s of a 1-seed DER++ run on Seq-MNIST on the 2-core VM,
`docs/speed.md`). A `ProgramStore` is keyed instead by a caller's `program_key` (a string
that, with the package's source, determines every program the run builds: the `cljax`
command makes it from its resolved command line), the arguments' tree, shapes, dtypes and
placement, and the environment that changes a program (jax and jaxlib versions, the backend
and its devices, `XLA_FLAGS` and the `JAX_`/`CLJAX_` variables, the jax settings that change
tracing). A hit deserialises the executable XLA compiled the first time: the very program,
so results are bit-identical. The data are the programs' arguments, not their constants:
their shapes are in the key, their values are not.

Only the `cljax` command sets a key, and not when it imports a user's module (`--import`:
code outside the package that the key would not see). A program that cannot be serialised
(JAX refuses executables with constant arguments) or a file that cannot be read is compiled
as usual; the folder is kept under `MAX_BYTES`, oldest first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import tempfile
from pathlib import Path

import jax

MAX_BYTES = 2**30
SUFFIX = ".program"
# jax settings that change what a function traces to
_CONFIG = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_enable_checks",
    "jax_debug_nans",
    "jax_debug_infs",
    "jax_disable_jit",
)
_source_digest: str | None = None
# custom calls that XLA's CPU backend itself provides (`lax.top_k`: the replay draws); a
# program calling any other is not stored (see `_self_contained`)
XLA_TARGETS = {"TopK"}


def source_digest() -> str:
    """sha256 of every .py file of the installed `cljax` package (once a process)."""
    global _source_digest
    if _source_digest is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        _source_digest = h.hexdigest()
    return _source_digest


def environment() -> str:
    """What besides the caller's key and the arguments changes a compiled program."""
    devices = jax.devices()
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(("JAX_", "XLA_", "CLJAX_")))
    config = [(name, str(getattr(jax.config, name, None))) for name in _CONFIG]
    return repr(
        (
            jax.__version__,
            getattr(jax.lib, "__version__", ""),
            source_digest(),
            jax.default_backend(),
            [(d.id, d.platform, d.device_kind) for d in devices],
            jax.process_index(),
            jax.process_count(),
            env,
            config,
        )
    )


def signature(args) -> str:
    """The arguments as a program sees them: tree, shapes, dtypes, weak types, placement."""
    leaves, tree = jax.tree.flatten(args)
    # a train state's tree shows its functions (apply_fn, the optimizer) at their addresses,
    # which change every process: the caller's key stands for what they are
    parts = [re.sub(r" at 0x[0-9a-f]+", "", str(tree))]
    for a in leaves:
        sharding = getattr(a, "sharding", None)
        parts.append(
            f"{a.shape}|{a.dtype}|{getattr(a, 'weak_type', False)}|{type(a).__name__}|{sharding}"
        )
    return "\n".join(parts)


class ProgramStore:
    """Compiled programs in `folder`, under the caller's `key` (see the module docstring)."""

    def __init__(self, folder: str | Path, key: str):
        self.folder = Path(folder)
        self.base = f"{key}\n{environment()}"

    def path(self, name: str, args) -> Path:
        digest = hashlib.sha256(f"{self.base}\n{name}\n{signature(args)}".encode()).hexdigest()
        return self.folder / f"{digest}{SUFFIX}"

    def load(self, name: str, args):
        """The `jax.stages.Compiled` stored for `name` and `args`, or None."""
        from jax.experimental import serialize_executable

        path = self.path(name, args)
        try:
            payload, outputs = pickle.loads(path.read_bytes())
            out_tree = _outputs_tree(outputs, args)
            # the arguments' placement is in the key, and a program is stored only when it
            # spans every device (`compile`): it loads onto them as it was compiled
            compiled = serialize_executable.deserialize_and_load(payload, _in_tree(args), out_tree)
        except Exception:  # none yet, or a torn or foreign file: compiled (again) and stored
            return None
        os.utime(path)  # the folder is trimmed oldest first
        return compiled

    def compile(self, name: str, args, lowered):
        """`lowered.compile()`, stored. XLA compiles it afresh, JAX's persistent cache off for
        the compile: on the CPU an executable read from that cache serialises without its
        functions (loaded again it fails: "Function ... not found"), so only a fresh one is
        stored."""
        with _persistent_cache_off():
            compiled = lowered.compile()
        if _devices(compiled) == len(jax.devices()) and _self_contained(compiled):
            self.save(name, args, compiled)
        return compiled

    def save(self, name: str, args, compiled) -> None:
        """Stores `compiled` (compiled afresh: see `compile`); quietly nothing where JAX
        cannot serialise it or the folder cannot be written."""
        from jax.experimental import serialize_executable

        tmp = None
        try:
            executable, in_tree, out_tree = serialize_executable.serialize(compiled)
            if in_tree != _in_tree(args):
                return
            payload = pickle.dumps((executable, _outputs(out_tree, args)))
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, self.path(name, args))
        except Exception:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return
        trim(self.folder)


@contextlib.contextmanager
def _persistent_cache_off():
    """JAX's persistent compilation cache neither read nor written inside."""
    from jax.experimental.compilation_cache import compilation_cache

    was = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()  # JAX decides once whether the cache is used
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", was)
        compilation_cache.reset_cache()


def _devices(compiled) -> int:
    """How many devices `compiled`'s inputs are placed on."""
    shardings = jax.tree.leaves(compiled.input_shardings)
    return len(set().union(*(s.device_set for s in shardings)))


def _self_contained(compiled) -> bool:
    """Whether `compiled` runs without anything its process set up: no host callbacks, no
    effects, no custom calls but XLA's own (`XLA_TARGETS`). A program calling LAPACK
    (`jnp.linalg.solve`: GEM's QP), loaded in a process that had not lowered one itself,
    crashed the process (SIGSEGV) on its first call: jaxlib registers those targets when it
    lowers them."""
    unloaded = getattr(compiled._executable, "_unloaded_executable", None)
    if unloaded is None:
        return False
    for name in ("host_callbacks", "keepalive", "unordered_effects", "ordered_effects"):
        if getattr(unloaded, name, None):
            return False
    targets = set(re.findall(r'custom_call_target="([^"]+)"', compiled.as_text()))
    return targets <= XLA_TARGETS


def _in_tree(args):
    """The tree of a compiled function's `(args, kwargs)` called with `args` alone."""
    return jax.tree.structure((tuple(args), {}))


def _outputs(out_tree, args) -> list:
    """`out_tree` (a tuple's tree) as picklable parts: each output whose tree is an
    argument's as `("arg", i)` (a train state's tree holds its optimizer's functions, which
    do not pickle), any other as its own tree (which must pickle: dicts of arrays)."""
    trees = [jax.tree.structure(a) for a in args]
    parts = []
    for child in out_tree.children():
        parts.append(("arg", trees.index(child)) if child in trees else ("tree", child))
    if _outputs_tree(parts, args) != out_tree:
        raise ValueError("the outputs are not a tuple")
    return parts


def _part(part, args):
    kind, value = part
    return jax.tree.structure(args[value]) if kind == "arg" else value


def _outputs_tree(parts, args):
    trees = [_part(p, args) for p in parts]
    return jax.tree.structure(tuple(jax.tree.unflatten(t, [0] * t.num_leaves) for t in trees))


def trim(folder: Path, max_bytes: int = MAX_BYTES) -> None:
    """Deletes the least recently used programs until the folder holds at most `max_bytes`."""
    try:
        files = [(p.stat(), p) for p in folder.glob(f"*{SUFFIX}")]
    except OSError:
        return
    total = sum(stat.st_size for stat, _ in files)
    for stat, path in sorted(files, key=lambda f: f[0].st_mtime):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= stat.st_size


def open_store(key: str | None) -> ProgramStore | None:
    """The store of `key` beside JAX's persistent cache (its folder's `programs/`), or None
    without a key or a cache folder."""
    folder = jax.config.jax_compilation_cache_dir
    if not key or not folder:
        return None
    return ProgramStore(Path(folder) / "programs", key)
