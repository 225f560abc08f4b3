"""Data parallelism over a device mesh, for every method with no change to its code.

The driver builds a `Mesh` with one axis, `data`, over N devices. Parameters,
optimizer state and the replay buffer are replicated; each step's global batch
is constrained to be split over `data`. XLA's SPMD partitioner then runs the
forward and backward passes data-parallel, sums the gradients across devices,
and computes the reservoir update from the global batch and the replicated key,
so every device holds the identical buffer: the rehearsal methods that
PyTorch's DistributedDataParallel cannot serve need no special code.

Several hosts: call `initialize()` first on every host (it runs
`jax.distributed.initialize()` when the usual coordinator environment is set,
as on Cloud TPU VMs); the mesh then spans every host's devices.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"


def initialize() -> None:
    """Joins a multi-host job when its environment says so (no-op on one host)."""
    markers = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES")
    if any(os.environ.get(m) for m in markers) and jax.process_count() == 1:
        jax.distributed.initialize()


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh with axis `data` over the first `num_devices` devices (default: all)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(
            f"--devices {n}: this process sees {len(devices)} device(s) "
            f"({devices[0].platform}); choose 1..{len(devices)}"
        )
    return Mesh(np.array(devices[:n]), (DATA,))


def replicate(tree, mesh: Mesh):
    """Places every array of `tree` on all devices of `mesh` (works across hosts)."""
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(a):
        a = np.asarray(a) if not isinstance(a, jax.Array) else a
        if jax.process_count() == 1:
            return jax.device_put(a, sharding)
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree)


def shard_batch(tree, mesh: Mesh | None):
    """Inside `jit`: asks for the leading (batch) axis of every leaf to be split over `data`."""
    if mesh is None or mesh.size == 1:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec(DATA))
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)
