"""The run plan pinned: the driver's batch schedules, step sizes, valid masks and chunking.

`python -m tests.plan_golden` records `tests/golden/plan/run_plans.json` (recorded before the driver
was redesigned in issue 45, from the functions of that time, a604895; only a change that
means to move a schedule re-records it, and says so); `tests/test_plan_golden.py` checks it. The
plan is pure numpy, so the digests are the same on every machine.

Cases: the tiny class-incremental scenario (short and filled last batches, a set number
of steps, a longer first task, the joint protocol), per-seed pixel maps, a fuzzy stream,
a MNIST-360 stream of synthetic labels at batch 16 (and of the real labels where the
MNIST files are present), and a pool of iCaRL-style exemplars added to a task's items.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from cljax import run as run_lib
from cljax import train
from cljax.benchmarks import scenarios, streams
from tests.conftest import tiny_scenario

PLAN = Path(__file__).with_name("golden") / "plan" / "run_plans.json"


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, str(a.dtype))).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def tiny_domain():
    """The tiny scenario's images as 3 tasks of pixel permutations drawn per seed."""
    sc = tiny_scenario(num_tasks=3)
    x_tr, y_tr = (np.concatenate(a) for a in zip(*(sc.train(t) for t in range(3)), strict=True))
    x_te, y_te = (np.concatenate(a) for a in zip(*(sc.test(t) for t in range(3)), strict=True))
    maps = lambda s: scenarios.domain_maps("perm-mnist", s, 3, x_tr.shape[1:])  # noqa: E731
    src, keep = maps(0)
    transforms = [
        lambda x, a=a, b=b: scenarios.apply_maps(x, a, b) for a, b in zip(src, keep, strict=True)
    ]
    raw = lambda split: (x_tr, y_tr) if split == "train" else (x_te, y_te)  # noqa: E731
    arrays = (x_tr, y_tr, x_te, y_te)
    return scenarios.domain_incremental(
        "tiny-perm", arrays, transforms, sc.input_fn, "mlp", seed_maps=maps, raw=raw
    )


def synthetic_360():
    """MNIST-360 over synthetic MNIST-like labels (60 items a class)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 60).astype(np.int32)
    x = rng.integers(0, 255, (len(y), 6, 6)).astype(np.uint8)
    return streams.mnist360((x, y, x[:40], y[:40]), scenarios.scaled_input(255.0))


def real_360(data_dir: Path):
    return scenarios.build("mnist-360", data_dir)


def cases(data_dir: Path | None = None) -> dict:
    """`{name: (scenario, method name, RunConfig keyword arguments, pool per task)}`."""
    tiny = tiny_scenario(num_tasks=3, per_class=7)
    base = dict(batch_size=4, chunks_per_task=3, progress=False, seeds=(0, 1, 2))
    out = {
        "tiny-short": (tiny, "er", base, None),
        "tiny-fill": (tiny, "dgr", base, None),
        "tiny-fill-asked": (tiny, "er", {**base, "last_batch": "fill"}, None),
        "tiny-steps": (tiny, "er", {**base, "steps": 9}, None),
        "tiny-epochs": (tiny, "er", {**base, "epochs": 2, "first_epochs": 3}, None),
        "tiny-joint": (tiny, "joint", {**base, "protocol": "joint"}, None),
        "tiny-pool": (tiny, "icarl", {**base, "epochs": 2}, ((0, 0), (8, 5), (8, 8))),
        "domain-maps": (tiny_domain(), "er", base, None),
        "fuzzy": (streams.fuzzy(tiny, fuzziness=1), "er", base, None),
        "fuzzy-joint": (
            streams.fuzzy(tiny, fuzziness=1),
            "joint",
            {**base, "protocol": "joint"},
            None,
        ),
        "mnist360-synthetic": (synthetic_360(), "er", {**base, "batch_size": 16}, None),
        "mnist360-synthetic-fill": (
            synthetic_360(),
            "er",
            {**base, "batch_size": 16, "last_batch": "fill"},
            None,
        ),
    }
    if data_dir is not None:
        out["mnist360-real"] = (real_360(data_dir), "er", {**base, "batch_size": 16}, None)
    return out


def plan_of(scenario, name: str, kwargs: dict, pools) -> dict:
    """The plan of every task of one case, as digests and counts."""
    from tests.test_methods import make

    # `pools`: per task (the pool's capacity, its valid items) where the method adds a pool
    capacity = max(p[0] for p in pools) if pools else 0
    method = make(name, **({"buffer_size": capacity} if pools else {}))
    config = train.RunConfig(**kwargs)
    plan = run_lib.plan_run(method, scenario, config)
    out = {
        "seeds": list(plan.seeds),
        "last_batch": plan.config.last_batch,
        "maps": None if plan.maps is None else _digest(*plan.maps),
        "stream": None if plan.stream is None else _digest(*plan.stream.values()),
        "tasks": [],
    }
    for t in range(scenario.num_tasks):
        n = plan.task_items(t)
        if n is None:
            out["tasks"].append(None)
            continue
        pool = pools[t][1] if pools else 0
        task = plan.task(t, n, pool)
        out["tasks"].append(
            {
                "schedule": _digest(task.idx),
                "valid": _digest(task.valid),
                "sizes": _digest(task.sizes),
                "shape": list(task.idx.shape),
                "length": task.length,
                "chunks": task.chunks,
                "steps": task.steps,
                "short_steps": int((task.sizes[task.valid] < plan.config.batch_size).sum()),
            }
        )
    return out


def main(argv) -> int:
    data_dir = Path(argv[0]) if argv else None
    found = {name: plan_of(*case) for name, case in cases(data_dir).items()}
    PLAN.write_text(json.dumps(found, indent=1) + "\n")
    for name, plan in found.items():
        print(name, [t and (t["schedule"], t["steps"]) for t in plan["tasks"]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
