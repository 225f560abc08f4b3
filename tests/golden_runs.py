"""Short driver runs of every method whose outputs are pinned in `tests/golden/`.

`python -m tests.golden_runs` records them (do it only when a change is meant to
move results, and say so in the commit); `tests/test_golden.py` checks them.
Each run: the tiny two-task scenario, seeds 0 and 1 (seed 0 alone for the methods
that resize their networks: they run seeds one after another, so a second seed
only repeats the same code at the cost of its own compiles), batch 4, one epoch,
the method's test-sized hyperparameters. Recorded: both accuracy matrices, the
per-seed final training losses and a checksum of every leaf of the final state.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import jax
import numpy as np

from cljax import methods, train
from tests.conftest import tiny_scenario

GOLDEN = Path(__file__).with_name("golden")


def machine() -> dict:
    """What must match for the outputs to be bit-identical."""
    info = {}
    try:  # the first processor's fields
        for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines():
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except OSError:
        pass
    # XLA compiles for the host CPU's generation and vector extensions: two CPUs sold under
    # one name ("AMD EPYC" covers Zen 1 to Zen 5) give different bits, so those are part of it
    flags = set(info.get("flags", "").split())
    return {
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "cpu": info.get("model name", ""),
        "cpu_id": f"{info.get('vendor_id', '')} family {info.get('cpu family', '')} "
        f"model {info.get('model', '')}",
        "vector": sorted(flags & VECTOR_FLAGS),
        # the suite's compile flags (tests/conftest.py) change the bits too
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


VECTOR_FLAGS = {"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile"}


def _leaves(state):
    out = []
    for leaf in jax.tree.leaves(state):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append(np.asarray(leaf))
    return out


def state_summary(states) -> dict:
    """sha256 of every leaf's bytes, and float sums (for comparisons across machines)."""
    digest = hashlib.sha256()
    total, absolute = 0.0, 0.0
    for leaf in (a for s in states for a in _leaves(s)):
        digest.update(str((leaf.shape, str(leaf.dtype))).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
        if np.issubdtype(leaf.dtype, np.floating):
            total += float(np.sum(leaf, dtype=np.float64))
            absolute += float(np.sum(np.abs(leaf), dtype=np.float64))
    return {"sha256": digest.hexdigest(), "sum": total, "abs_sum": absolute}


def build(name):
    """The method under test, as the contract test builds it."""
    from tests.test_methods import make

    return make(name)


def run(name) -> dict:
    """One golden run of method `name`."""
    scenario = tiny_scenario()
    method = build(name)
    config = train.RunConfig(
        epochs=1,
        batch_size=4,
        seeds=(0,) if method.host.resize is not None else (0, 1),
        chunks_per_task=2,
        progress=False,
    )
    res = train.run(method, scenario, config)
    state = res.pop("state")
    states = state if isinstance(state, list) else [state]
    return {
        "accuracy": res["accuracy"],
        "final_train_loss": res["final_train_loss"],
        "state": state_summary(states),
    }


def names():
    return list(methods.names())


def main(argv) -> int:
    GOLDEN.mkdir(exist_ok=True)
    for name in argv or names():
        out = {"machine": machine(), **run(name)}
        (GOLDEN / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
        print(name, out["state"]["sha256"][:12], next(iter(out["accuracy"].values()))[0][-1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
