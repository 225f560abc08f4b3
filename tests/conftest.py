"""Shared fixtures: the real MNIST files when present, small synthetic scenarios.

Compiled programs are shared across the suite through JAX's persistent compilation
cache, in a folder made fresh for each session (unless JAX_COMPILATION_CACHE_DIR is
set): many tests compile the same program (a method's task runner on the tiny
scenario, a driver run stopped and resumed), and on a CPU the compiles are most of the
suite's time. A cache hit loads the very executable the compile produced, so results
are unchanged. Subprocesses (the sharding tests) inherit the folder.

The suite compiles with XLA's backend optimization level 0 (`FAST_COMPILE`, added to
XLA_FLAGS unless they set a level): LLVM's optimizations are most of a CPU compile, and
the suite's programs are tiny, so this halves its time. It also turns off XLA's CPU
fusion emitters (`--xla_cpu_use_fusion_emitters=false`, the older loop emitters): each of the
suite's ~1,500 compiles a file (most of them eager ops of a test's own code) took 30-80 ms
with them, and the golden and own-loop tests took 98 s instead of 180 s without them
(session 36). The programs compute the same functions (last-bit float differences aside:
17 of 30 golden state checksums moved in their last bits when the flag came in, no
accuracy); the golden outputs are recorded under the same flags (`golden_runs.machine`
holds them), and CI's quick start in a fresh virtualenv runs the `cljax` command at XLA's
default level. Subprocesses get the flag through
`subprocess_env`.

Convolutions run as flax's `lax.conv` (`CLJAX_CONV_IMPL=lax`, unless set): at level 0
the CPU default, the im2col form (`cljax.models.conv`), compiles its many slices 2-3x
slower. `tests/test_conv.py` proves the two equal (values, gradients, inside a scan) and
names its `impl` wherever it means one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

from cljax.benchmarks import scenarios

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
os.environ.setdefault("CLJAX_CONV_IMPL", "lax")


def subprocess_env(host_devices: int | None = None) -> dict:
    """This environment for a subprocess with the suite's compile flag as its only XLA
    flag (a user's device count dropped), plus `host_devices` CPU devices if given."""
    flags = FAST_COMPILE
    if host_devices is not None:
        flags += f" --xla_force_host_platform_device_count={host_devices}"
    return {**os.environ, "XLA_FLAGS": flags}


if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cljax-test-jit-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update(
    "jax_persistent_cache_min_entry_size_bytes",
    int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]),
)


def pytest_configure(config):
    """The backend starts here, with the one CPU device of the environment: the `cljax`
    command's host devices (one a core, set only before the backend starts) never reach
    the suite's in-process runs, which the golden outputs pin on one device. (Not at
    import: the multi-host check imports this module before `jax.distributed`.)"""
    jax.devices()


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """`../shared/data` (or $CLJAX_DATA_DIR) holding mnist/; skips when absent."""
    root = Path(os.environ.get("CLJAX_DATA_DIR", SHARED_DATA))
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST files not found under {root} (set CLJAX_DATA_DIR to run this)")
    return root


def tiny_scenario(num_tasks=2, per_class=12, test_per_class=6, size=6, seed=0, base_classes=0):
    """A class-incremental scenario over random 6x6 'images' whose class sets the mean:
    2 classes a task, or `base_classes` in the first and the rest 1 a task after it."""
    rng = np.random.default_rng(seed)
    classes = base_classes + num_tasks - 1 if base_classes else 2 * num_tasks

    def make(n):
        y = np.repeat(np.arange(classes), n).astype(np.int32)
        x = rng.integers(0, 60, (len(y), size, size)) + 19 * y[:, None, None]
        return x.astype(np.uint8), y

    arrays = (*make(per_class), *make(test_per_class))
    return scenarios.class_incremental(
        "tiny", arrays, num_tasks, scenarios.scaled_input(255.0), "mlp", base_classes=base_classes
    )


def run_tasks(method, sc, tasks=None, steps=6, batch=4, key=0):
    """A user's own loop over `tasks` of scenario `sc` (all by default): `steps` jitted steps of
    `batch` items a task, in order. Returns the final state and, per task, `(state, metrics)`
    after its last step (before `end_task`)."""
    import jax
    import jax.numpy as jnp

    from cljax.methods import TaskInfo

    classes = [sc.classes(t) for t in range(sc.num_tasks)]
    state = method.init(jax.random.key(key), sc.train(0)[0][:2])
    step = jax.jit(method.train_step)
    history = []
    for t in range(sc.num_tasks if tasks is None else tasks):
        info = TaskInfo.of(t, classes)
        state = method.begin_task(state, info, jax.random.key(100 + t))
        x, y = sc.train(t)
        for i in range(steps):
            j = (np.arange(batch) + batch * i) % len(y)
            b = {"x": jnp.asarray(x[j]), "y": jnp.asarray(y[j])}
            state, metrics = step(state, b, jax.random.key(1000 * t + i))
        history.append((state, metrics))
        state = method.end_task(state, info, (x, y), jax.random.key(200 + t))
    return state, history


@pytest.fixture(scope="session")
def tiny():
    return tiny_scenario()


@pytest.fixture(autouse=True)
def _results_files_follow_the_schema(request):
    """Every results.json a test writes under its tmp_path validates against the package's
    JSON Schema (`cljax/outputs/results.schema.json`)."""
    folder = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if folder is None:
        return
    import json

    from cljax.outputs import results

    for path in folder.rglob("results.json"):
        try:
            obj = json.loads(path.read_text())
        except ValueError:
            continue  # a test that damages the file on purpose
        errors = results.validate(obj)
        assert not errors, f"{path} does not follow cljax/outputs/results.schema.json: {errors[:3]}"
