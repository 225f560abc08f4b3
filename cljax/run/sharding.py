"""Data parallelism over a device mesh, for every method with no change to its code.

The driver builds a `Mesh` with one axis, `data`, over N devices. Parameters,
optimizer state and the replay buffer are replicated; each step's global batch
is constrained to be split over `data`. XLA's SPMD partitioner then runs the
forward and backward passes data-parallel, sums the gradients across devices,
and computes the reservoir update from the global batch and the replicated key,
so every device holds the identical buffer: the rehearsal methods that
PyTorch's DistributedDataParallel cannot serve need no special code.

Seeds over devices: a second mesh axis, `seeds`, splits the seed axis of the
vmapped state (`seed_devices` of the devices; the rest of the factor is `data`).
The task runner is a `shard_map` over `seeds`: each device trains its own seeds
with no communication, and `data` stays automatic inside it. The seeds are padded
to a multiple of `seed_devices` with copies of the first ones, whose results are
dropped (`cljax.run.execute.SeedsRun`). On a CPU the `cljax` command splits the seeds
over the cores as host devices (`host_devices`).

Several hosts: call `initialize()` first on every host (it runs
`jax.distributed.initialize()` when the usual coordinator environment is set,
as on Cloud TPU VMs); the mesh then spans every host's devices.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA, SEEDS = "data", "seeds"


def initialize() -> None:
    """Joins a multi-host job when its environment says so (no-op on one host).

    Call it before anything else touches JAX: `jax.distributed.initialize` refuses
    once a backend is up (even `jax.process_count()` starts one).
    """
    if not joining() or jax.distributed.is_initialized():
        return
    # JAX reads the coordinator from the environment but not these two (it detects them on
    # Cloud TPU, SLURM and the like); elsewhere the README has users set them
    counts = {}
    for name, var in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        text = os.environ.get(var)
        if text is not None:
            if not text.strip().isdigit():
                raise ValueError(f"{var}={text!r}: expected a non-negative integer")
            counts[name] = int(text)
    jax.distributed.initialize(**counts)


def joining() -> bool:
    """Whether the environment names a multi-host job's coordinator."""
    markers = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES")
    return any(os.environ.get(m) for m in markers)


def make_mesh(num_devices: int | None = None, seed_devices: int = 1) -> Mesh:
    """A `(seeds, data)` mesh over the first `num_devices` devices (default: all):
    `seed_devices` of them split the seeds, `num_devices / seed_devices` the batch."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(
            f"--devices {n}: this process sees {len(devices)} device(s) "
            f"({devices[0].platform}); choose 1..{len(devices)}"
        )
    if seed_devices < 1 or n % seed_devices:
        raise ValueError(
            f"--seed-devices {seed_devices} must divide the {n} devices used; the rest of the "
            "factor splits each batch (data-parallel)"
        )
    grid = np.array(devices[:n]).reshape(seed_devices, n // seed_devices)
    return Mesh(grid, (SEEDS, DATA))


def data_size(mesh: Mesh | None) -> int:
    """Devices each batch is split over."""
    return 1 if mesh is None else mesh.shape[DATA]


def seeds_size(mesh: Mesh | None) -> int:
    """Devices the seeds are split over."""
    return 1 if mesh is None or SEEDS not in mesh.shape else mesh.shape[SEEDS]


def host_devices(n: int) -> bool:
    """Asks XLA for `n` CPU devices (one a core), unless the user's XLA_FLAGS say how many;
    True when set. Only before JAX starts its backend (it reads XLA_FLAGS once); accelerator
    platforms are untouched (their CPU devices are not used)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or n <= 1:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    return True


def replicate(tree, mesh: Mesh):
    """Places every array of `tree` on all devices of `mesh` (works across hosts)."""
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(a):
        a = np.asarray(a) if not isinstance(a, jax.Array) else a
        if jax.process_count() == 1:
            return jax.device_put(a, sharding)
        if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
            return a
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):  # typed keys: via their data
            return jax.random.wrap_key_data(
                put(jax.random.key_data(a)), impl=jax.random.key_impl(a)
            )
        host = np.asarray(a)  # a host copy (every host holds the same values)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree)


def place_seeds(tree, mesh: Mesh):
    """Places every array of `tree` with its leading (seed) axis split over `seeds`
    (replicated over `data`); with one seed device, as `replicate`."""
    if seeds_size(mesh) == 1:
        return replicate(tree, mesh)
    sharding = NamedSharding(mesh, PartitionSpec(SEEDS))
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def shard_batch(tree, mesh: Mesh | None):
    """Inside `jit`: asks for the leading (batch) axis of every leaf to be split over `data`."""
    if data_size(mesh) == 1:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec(DATA))
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)
