"""The run plan: every decision about a run's shape, made once, in plain numpy.

`plan_run(method, scenario, config)` answers what the driver used to decide in many
places: the seeds and their padding, the mesh's shape, the protocol, the last-batch
rule, the settings scored, the per-seed pixel maps or stream, and per task (when it
starts: iCaRL's pool is known only after the previous `end_task`) a `TaskPlan` of batch
indices, step sizes, valid steps and chunks. The driver, the CLI and the tests read it;
nothing else recomputes `ceil(n / batch)`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from cljax.benchmarks import streams
from cljax.benchmarks.scenario import Scenario
from cljax.methods import Method, TaskInfo, check_scenario
from cljax.run.checkpoint_io import CheckpointError


def epoch_steps(n: int, batch: int, drop: bool = False) -> int:
    """Steps of one pass over `n` items in batches of `batch`: the last one short or filled
    up, or with `drop` left out (a PyTorch `DataLoader(drop_last=True)`)."""
    if drop:
        if n < batch:
            raise ValueError(
                f"last_batch drop: a task of {n} items has no full batch of {batch}; "
                "choose a smaller batch size or last_batch short/fill"
            )
        return n // batch
    return math.ceil(n / batch)


def schedule(
    seed: int, task: int, n: int, epochs: int, batch: int, steps=None, drop: bool = False
) -> np.ndarray:
    """Batch indices `(steps, batch)` of one seed on one task: a fresh shuffle per epoch.

    The last batch of an epoch is filled up with the first items of the same
    shuffle, so every step has `batch` items (at most batch-1 repeats an epoch);
    with `drop` the items that do not fill a batch sit the epoch out instead.
    With `steps`, exactly that many steps are taken (as many epochs as needed).
    """
    per_epoch = epoch_steps(n, batch, drop)
    if steps is not None:
        epochs = math.ceil(steps / per_epoch)
    rows = []
    for epoch in range(epochs):
        perm = np.random.default_rng([seed, task, epoch]).permutation(n)
        if drop:
            perm = perm[: per_epoch * batch]
        else:
            perm = np.concatenate([perm, np.resize(perm, per_epoch * batch - n)])
        rows.append(perm.reshape(per_epoch, batch))
    return np.concatenate(rows)[:steps].astype(np.int32)


def step_sizes(n: int, epochs: int, batch: int, steps=None) -> np.ndarray:
    """Items of each step of `schedule(..., n, epochs, batch, steps)` under the "short" last
    batch: `batch`, but an epoch's last step takes only the `n - (per_epoch - 1) * batch`
    items left (a PyTorch `DataLoader` without `drop_last`, as Mammoth trains)."""
    per_epoch = math.ceil(n / batch)
    if steps is not None:
        epochs = math.ceil(steps / per_epoch)
    sizes = np.full((epochs, per_epoch), batch, np.int32)
    sizes[:, -1] = n - (per_epoch - 1) * batch
    return sizes.ravel()[:steps]


def stream_schedule(seed: int, n: int, config) -> np.ndarray:
    """Stream positions `(steps, batch)` of one seed: 0..n-1 in order, the last batch filled
    with the first positions (the joint upper bound: one shuffled pass, as `schedule`);
    `config.steps` keeps the first that many batches."""
    if config.protocol == "joint":
        return schedule(seed, 0, n, 1, config.batch_size, config.steps)
    rows = math.ceil(n / config.batch_size)
    idx = np.resize(np.arange(n, dtype=np.int32), rows * config.batch_size)
    return idx.reshape(rows, config.batch_size)[: config.steps]


def stream_rows(batches, batch: int, steps=None):
    """`(idx, sizes)`: stream positions `(steps, batch)` of a stream cut into batches of
    `batches` items each (a short one's row topped up with its own first positions, which
    its step leaves out), and the items of each; `steps` keeps the first that many."""
    ends = np.cumsum(batches)
    rows = [
        np.resize(np.arange(e - b, e, dtype=np.int32), batch)
        for e, b in zip(ends, batches, strict=True)
    ]
    return np.stack(rows)[:steps], np.asarray(batches, np.int32)[:steps]


def task_info(scenario: Scenario, config, t: int) -> TaskInfo:
    """The static facts of task `t` of `scenario` run with `config` (a `RunConfig`) that the
    boundary functions receive."""
    seen = tuple(c for j in range(t + 1) for c in scenario.classes(j))
    per_epoch = epoch_steps(scenario.train_sizes[t], config.batch_size, config.last_batch == "drop")
    steps = config.steps or config.epochs_of(t) * per_epoch
    epochs = 0 if config.steps else config.epochs_of(t)
    classes = tuple(scenario.classes(t))
    return TaskInfo(
        t, classes, seen, per_epoch, steps, config.batch_size, epochs, scenario.num_tasks
    )


def chunk_length(config, max_items: int) -> int:
    """Steps per compiled chunk: the same for every task of a run, so one compile serves all."""
    epochs = max(config.epochs, config.epochs_of(0))
    per_epoch = epoch_steps(max_items, config.batch_size, config.last_batch == "drop")
    steps = config.steps or epochs * per_epoch
    return math.ceil(steps / max(1, min(config.chunks_per_task, steps)))


@dataclasses.dataclass(frozen=True)
class TaskPlan:
    """One task's schedule, padded to whole chunks: `idx` `(seeds, chunks * length, batch)`
    (a negative index `-j - 1` is item j of the method's pool), `valid` the real steps,
    `sizes` the items each step takes (fewer than the batch: an epoch's short last one)."""

    task: int
    idx: np.ndarray
    valid: np.ndarray
    sizes: np.ndarray
    length: int  # steps a compiled chunk
    chunks: int
    steps: int  # real steps of the task

    def check_resume(self, length: int, steps: int, chunk: int) -> None:
        """Refuses a checkpoint that cut this task into other chunks."""
        if (length, steps) != (self.length, self.steps):
            raise CheckpointError(
                f"the checkpoint stopped task {self.task + 1} after chunk {chunk + 1} of "
                f"{length} steps ({steps} in the task), but this run cuts it into chunks "
                f"of {self.length} ({self.steps} in the task); resume with the settings it "
                "was made with"
            )


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The shape of one run (see `plan_run`). `config` is the `RunConfig` with its protocol
    and last batch resolved; `seeds` are padded to a multiple of the seed devices with
    copies of the first ones (`seeds[:n_real]` are reported and checkpointed)."""

    scenario: Scenario
    config: Any
    seeds: tuple[int, ...]
    n_real: int
    mesh_shape: tuple[int, int]  # (seed devices, data devices)
    settings: tuple[str, ...]  # the settings the method is scored in
    maps: tuple[np.ndarray, np.ndarray] | None  # each seed's pixel maps (S, T, P), or None
    stream: dict | None  # a stream's items (and angles) per seed (S, L), or None
    stream_batches: np.ndarray | None  # a stream's own batch sizes, or None
    pad_to: int  # every task's arrays padded to this many items (0: none): one compile
    pool_capacity: int  # slots of the method's pool, added to the chunk length's items

    @property
    def joint(self) -> bool:
        return self.config.protocol == "joint"

    def task_info(self, t: int) -> TaskInfo:
        """The static facts of task `t` that the boundary functions receive."""
        return task_info(self.scenario, self.config, t)

    def trains_at(self, t: int) -> bool:
        """Whether task t has training steps (the joint protocol trains at the last only)."""
        return not self.joint or t == self.scenario.num_tasks - 1

    def task_items(self, t: int) -> int | None:
        """How many items task t trains on (None: none, the joint protocol waits)."""
        if not self.trains_at(t):
            return None
        if self.joint:
            return int(sum(self.scenario.train_sizes))
        return int(self.scenario.train_sizes[t])

    def stream_steps(self) -> int:
        """Steps of the one pass over a stream scenario (`config.steps` caps them)."""
        cfg = self.config
        if self.stream_batches is not None:
            steps = len(self.stream_batches)
        else:
            steps = math.ceil(self.stream["items"].shape[1] / cfg.batch_size)
        return min(cfg.steps or steps, steps)

    def task(self, t: int, n: int, pool: int = 0) -> TaskPlan:
        """Task t's schedule, computed when the task starts.

        Args:
            t: the task's index.
            n: the task's training items (`task_items(t)`).
            pool: valid items the method's `train_pool` adds to them (known only after
                the previous `end_task`).

        Returns:
            The `TaskPlan`: batch indices per seed, step sizes, valid steps, chunks.
        """
        idx, sizes = self._schedule(t, n, pool)
        steps, cfg = idx.shape[1], self.config
        if self.stream is not None:  # one task: its own steps set the chunks
            length = math.ceil(steps / max(1, min(cfg.chunks_per_task, steps)))
        else:
            length = chunk_length(cfg, max(n, self.pad_to) + self.pool_capacity)
        chunks = math.ceil(steps / length)
        pad = chunks * length - steps
        idx = np.concatenate([idx, np.zeros((len(self.seeds), pad, cfg.batch_size), np.int32)], 1)
        valid = np.arange(chunks * length) < steps
        sizes = np.concatenate([sizes, np.full(pad, cfg.batch_size, np.int32)])
        return TaskPlan(t, idx, valid, sizes, length, chunks, steps)

    def _schedule(self, t: int, n: int, pool: int):
        """`(idx (seeds, steps, batch), sizes (steps,))` before padding to whole chunks."""
        cfg = self.config
        if self.stream is not None:  # positions in the stream: in order (joint: shuffled)
            length = self.stream["items"].shape[1]
            idx = np.stack([stream_schedule(s, length, cfg) for s in self.seeds])
            sizes = np.full(idx.shape[1], cfg.batch_size, np.int32)
            if self.stream_batches is not None:
                idx, sizes = stream_rows(self.stream_batches, cfg.batch_size, cfg.steps)
                idx = np.broadcast_to(idx, (len(self.seeds), *idx.shape))
            return idx, sizes
        epochs = cfg.epochs_of(t)
        drop = cfg.last_batch == "drop"
        idx = np.stack(
            [schedule(s, t, n + pool, epochs, cfg.batch_size, cfg.steps, drop) for s in self.seeds]
        )
        idx = np.where(idx >= n, n - 1 - idx, idx)  # item n + j of the schedule: pool item j
        sizes = np.full(idx.shape[1], cfg.batch_size, np.int32)
        if cfg.last_batch == "short":
            sizes = step_sizes(n + pool, epochs, cfg.batch_size, cfg.steps)
        return idx, sizes

    def eval_ends(self, every: int) -> tuple[int, list[int]]:
        """For a stream scored every `every` steps: `(chunks per task, the step after which
        each chunk ends)`."""
        steps = self.stream_steps()
        chunks = math.ceil(steps / min(every, steps))
        length = math.ceil(steps / chunks)
        return chunks, [min((c + 1) * length, steps) for c in range(math.ceil(steps / length))]


def mesh_shape(config, devices: int) -> tuple[int, int]:
    """`(seed devices, data devices)` of a run on `config.devices` of the `devices` this
    process sees (the seed devices at most one a seed)."""
    n = config.devices or devices
    if not 1 <= n <= devices:
        raise ValueError(
            f"--devices {n}: this process sees {devices} device(s); choose 1..{devices}"
        )
    if config.seed_devices < 1 or n % config.seed_devices:
        raise ValueError(
            f"--seed-devices {config.seed_devices} must divide the {n} devices used; the rest "
            "of the factor splits each batch (data-parallel)"
        )
    return min(config.seed_devices, len(config.seeds)), n // config.seed_devices


def last_batch(method: Method, scenario: Scenario, config, data_devices: int) -> str:
    """`config.last_batch`, but "fill" where a short batch may not split over the data
    devices, the method needs full batches, or a stream is cut every batch_size items;
    "drop" (every batch full) only on a benchmark with tasks."""
    if config.last_batch == "drop" and scenario.stream is not None:
        raise ValueError(
            f"last_batch drop: {scenario.name} is a stream, cut into batches as it comes; "
            "use last_batch short or fill"
        )
    if config.last_batch == "short" and (
        data_devices > 1
        or method.needs.last_batch == "fill"
        or (scenario.stream is not None and scenario.stream_batches is None)
    ):
        return "fill"
    return config.last_batch


def scored_settings(method: Method, scenario: Scenario) -> tuple[str, ...]:
    """The evaluation settings a run reports (the scenario's single one where it has one)."""
    if scenario.single_setting is not None:
        return (scenario.single_setting,)
    allowed = set(method.needs.settings or ("class-il", "task-il")) & set(scenario.settings)
    return tuple(s for s in ("class-il", "task-il") if s in allowed) or ("class-il", "task-il")


def _maps(scenario: Scenario, seeds):
    if scenario.seed_maps is None:
        return None
    maps = [scenario.seed_maps(s) for s in seeds]
    return np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps])


def _stream(scenario: Scenario, seeds, batch_size: int):
    if scenario.stream is None:
        return None
    parts = [scenario.stream(s, batch_size) for s in seeds]
    out = {"items": np.stack([p[0] for p in parts]).astype(np.int32)}
    if parts[0][1] is not None:
        out["angles"] = np.stack([p[1] for p in parts]).astype(np.float32)
    return out


def plan_run(method: Method, scenario: Scenario, config, devices: int | None = None) -> RunPlan:
    """The plan of a run: every decision about its shape, made once.

    Args:
        method: the method to run; its `needs` decide the protocol, the last batch, the
            settings scored and the pool's size.
        scenario: the benchmark.
        config: the `RunConfig` as asked (its protocol None: the method's own).
        devices: how many devices this process sees (default: `len(jax.devices())`).

    Returns:
        A `RunPlan`: the config resolved, the seeds padded, the mesh shape, the settings,
        the maps or the stream; `plan.task(t, n, pool)` gives task t's `TaskPlan`.

    Raises:
        ValueError: saying why, for a run that cannot be made (a setting the method
            cannot be scored in, a stream run it cannot make, a device split or a batch
            that does not divide).
    """
    if devices is None:
        import jax

        devices = len(jax.devices())
    check_scenario(method, scenario.name, scenario.settings)
    streams.check_run(method, scenario, config.epochs, config.first_epochs)
    if config.lr_milestones and scenario.stream is not None:
        raise ValueError(f"lr_milestones: {scenario.name} is a stream, whose pass has no epochs")
    if config.lr_milestones and method.host.resize is not None:
        raise ValueError(
            f"lr_milestones: {method.name} rebuilds its networks on the host between tasks; "
            "set its own schedule (its Config) instead"
        )
    seed_devices, data = mesh_shape(config, devices)
    if config.batch_size % data:
        raise ValueError(
            f"batch size {config.batch_size} cannot be split over {data} devices; "
            f"choose a multiple of {data} or fewer devices"
        )
    config = dataclasses.replace(
        config,
        last_batch=last_batch(method, scenario, config, data),
        protocol=config.protocol or method.needs.protocol,
    )
    n = len(config.seeds)
    seeds = tuple(np.resize(config.seeds, -(-n // seed_devices) * seed_devices).tolist())
    stream = _stream(scenario, seeds, config.batch_size)
    own_batches = stream is not None and config.last_batch == "short" and config.protocol != "joint"
    joint = config.protocol == "joint"
    return RunPlan(
        scenario=scenario,
        config=config,
        seeds=seeds,
        n_real=n,
        mesh_shape=(seed_devices, data),
        settings=scored_settings(method, scenario),
        maps=_maps(scenario, seeds),
        stream=stream,
        stream_batches=scenario.stream_batches(config.batch_size) if own_batches else None,
        pad_to=0 if joint or stream is not None else max(scenario.train_sizes),
        pool_capacity=method.needs.pool_capacity,
    )
