"""Run by test_sharding.py as two processes on this machine, as two hosts of one job.

Each joins the job through `sharding.initialize` (the README's environment:
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), trains ER on a
mesh over both processes' devices with checkpoints into one shared work dir,
stops after the first chunk of task 2 (a mid-task checkpoint written by both),
resumes, and writes its accuracies and parameter sums to OUT/host-ID.json for
the test to compare with a one-process run.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from cljax import methods, models, train
from cljax.run import sharding
from tests.conftest import tiny_scenario

SC = tiny_scenario(num_tasks=2, per_class=16)
CONFIG = dict(epochs=1, batch_size=8, seeds=(0, 1), progress=False, chunks_per_task=2)


def make():
    return methods.get("er").make(
        model=models.MLP((16,), SC.num_classes),
        input_fn=SC.input_fn,
        lr=0.05,
        buffer_size=12,
        minibatch_size=8,
    )


def summary(res) -> dict:
    """What the test compares: accuracies and each state leaf's sum (this host's copy)."""
    leaves = [np.asarray(a.addressable_data(0)) for a in jax.tree.leaves(res["state"])]
    return {
        "accuracy": res["accuracy"],
        "sums": [float(np.sum(a, dtype=np.float64)) for a in leaves],
    }


def main(out):
    sharding.initialize()
    assert jax.process_count() == 2, jax.process_count()
    method = make()
    config = train.RunConfig(checkpoint_every_s=0.0, **CONFIG)
    work = Path(out) / "run"
    train.run(method, SC, config, workdir=work, stop_after=(1, 0))
    res = train.run(method, SC, config, workdir=work, resume=True)
    assert len(jax.tree.leaves(res["state"])[0].sharding.device_set) == jax.device_count()
    path = Path(out) / f"host-{jax.process_index()}.json"
    path.write_text(json.dumps(summary(res)))
    print(f"host {jax.process_index()} of {jax.process_count()}: done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
