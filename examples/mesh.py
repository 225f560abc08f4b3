"""Seeds and batches over a device mesh: 4 seeds of DER++ on a (seeds=2, data=2) mesh.

    python examples/mesh.py [--steps 30]

On a machine with several accelerators, `RunConfig(devices=N, seed_devices=K)`
splits the seeds over K of the N devices and each batch over the other N / K
(`cljax.run.sharding`: a `(seeds, data)` mesh). This example runs anywhere: on a CPU
it first asks XLA for 4 host devices (`sharding.host_devices`, before JAX's
backend starts), then trains the same 4 seeds three ways and compares them:

- on one device, the seeds under `vmap`;
- seeds split over 2 devices and each batch over 2 (`devices=4, seed_devices=2`);
- seeds split over 4 devices (`devices=4, seed_devices=4`).

The splits agree with the single-device run to float rounding (XLA may group a
sum differently across devices), which it prints.
"""

from __future__ import annotations

import argparse
import dataclasses

from cljax.run import sharding

sharding.host_devices(4)  # before anything starts JAX's backend (a no-op on accelerators)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from cljax import methods, models, train  # noqa: E402
from cljax.benchmarks import scenarios  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30, help="steps a task")
    args = p.parse_args(argv)
    print(f"{jax.device_count()} devices: {[d.device_kind for d in jax.devices()]}")
    scenario = scenarios.build("seq-digits")
    derpp = methods.get("derpp")
    method = derpp.make(
        derpp.Config(lr=0.1, alpha=0.3, beta=0.5, buffer_size=100, minibatch_size=10),
        model=models.make("mlp", scenario.num_classes),
        input_fn=scenario.input_fn,
    )
    # "fill": a batch split over devices takes full batches, so the one-device run must too
    # (an epoch's short last batch would otherwise give it other steps than the split runs)
    base = train.RunConfig(
        batch_size=10, seeds=(0, 1, 2, 3), steps=args.steps, progress=False, last_batch="fill"
    )
    runs = {}
    for devices, seed_devices in ((1, 1), (4, 2), (4, 4)):
        config = dataclasses.replace(base, devices=devices, seed_devices=seed_devices)
        res = train.run(method, scenario, config)
        runs[(devices, seed_devices)] = np.array(res["accuracy"]["class-il"], dtype=float)
        acc = res["final_average_accuracy"]["class-il"]
        print(
            f"devices={devices} seed_devices={seed_devices} "
            f"(mesh seeds x data = {seed_devices} x {devices // seed_devices}): "
            f"class-IL {acc['mean']:.2f} +- {acc['std']:.2f}, train {res['timing']['train_s']:.1f} s"
        )
    one = runs[(1, 1)]
    for key, acc in runs.items():
        if key != (1, 1):
            diff = np.nanmax(np.abs(acc - one))
            print(
                f"  {key}: largest difference from one device, any seed and task: {diff:.2f} points"
            )
    return runs


if __name__ == "__main__":
    main()
