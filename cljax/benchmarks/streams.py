"""Streams without task boundaries: the DER paper's General Continual Learning setting.

A stream scenario is a `Scenario` with one "task" (the whole stream) whose
`stream(seed, batch_size)` gives, per run seed, the stream's items in order
(indices into the training arrays) and each item's rotation angle (degrees) or
None. The driver trains on it as one long task: the batches are consecutive
slices of the stream (one pass, no epochs, no shuffle), each item is gathered
and rotated inside the compiled step, and the method gets no `begin_task` or
`end_task` (methods that need them are refused: `check_method`). The joint
upper bound (Mammoth's `joint_gcl`) trains on the same items shuffled.

MNIST-360 (`mnist360`) follows the paper's framework, Mammoth's
`datasets/mnist_360.py` (commit 7ab9db9), step by step:

- classes 0-8 of MNIST's training set; class j's images, in dataset order, are
  cut into 6 chunks of `N_j // 6 + 1` (the last shorter), used last chunk first;
- the stream shows two classes at a time, `(0, 1), (1, 2), ..., (7, 8), (8, 0)`,
  three rounds: each class meets 6 pairs, one chunk each;
- within a pair each batch takes `round(r0 / (r0 + r1) * B)` items of the first
  class (at most r0) and the rest of B (at most r1) of the second, r the items
  left in each chunk; the pair ends when either chunk is used up. Each item is
  drawn uniformly from its chunk, with replacement (Mammoth's `next(iter(loader))`
  opens a freshly shuffled loader per item);
- the k-th item drawn of class j (over the whole stream) is rotated by
  `(60 (j - 1) + k 360 / N_j) mod 360` degrees (Mammoth's `IncrementalRotation`,
  one per class): each class turns once around through the stream;
- test: class j's test images, the k-th rotated by `k 360 / N_j^test`.

Where this deviates from Mammoth, and why:
- The batches are Mammoth's: B items, but fewer at a pair's end where a chunk
  runs out (19 of 3,387 batches at B = 16), each such short batch a compiled
  step of its own (`Scenario.stream_batches`, the run setting `last_batch`
  "short", the default). Measured with Mammoth's own DER (buffer 200) on our
  stream's items, 5 seeds: 55.08 with these batches, 60.53 with a batch cut
  every B items (`last_batch=fill`, the stream's last batch then topped up with
  its first items; the history is in docs/results.md).
- Mammoth's test draws random batches with replacement (rotation angles in draw
  order); here every test image is used once, the angles `k 360 / N_j` assigned
  in a fixed random order: the same angles, without the draw's noise.
- Accuracy is the argmax over the 9 classes of the stream (Mammoth: over the
  network's 10 outputs, one never trained).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cljax.benchmarks.scenario import Scenario, apply_maps, rotation_map

NUM_CLASSES_360 = 9
ROUNDS_360 = 3


def rotate(x, angles):
    """Images `x` (B, H, W) rotated by `angles` (B,) degrees about their centres: nearest
    neighbour, zero fill, counter-clockwise (`scenarios.rotation_map` per item, in float32
    inside `jit`)."""
    src, keep = rotation_map(angles.astype(jnp.float32), x.shape[1:3], xp=jnp)
    return apply_maps(x, src, keep)


def _chunks(y, classes, parts: int):
    """Per class, its item indices cut into `parts` chunks as Mammoth cuts them."""
    out = []
    for j in classes:
        items = np.flatnonzero(y == j)
        size = len(items) // parts + 1
        out.append([items[k * size : (k + 1) * size] for k in range(parts)])
    return out


def mnist360_stream(y, batch_size: int, seed: int, batches: bool = False):
    """`(items, angles)`: MNIST-360's training stream for run `seed` (see the module
    docstring), `items` (L,) int32 indices into the training labels `y`, `angles` (L,)
    float32 degrees; with `batches`, also the items of each of Mammoth's batches (B, but
    fewer at a pair's end), the same for every seed."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    rng = np.random.default_rng([seed, 360])
    classes = range(NUM_CLASSES_360)
    chunks = _chunks(y, classes, 2 * ROUNDS_360)
    totals = [sum(len(c) for c in per_class) for per_class in chunks]
    drawn = [0] * NUM_CLASSES_360  # items drawn of each class so far: its rotation counter
    items, angles, sizes = [], [], []

    def draw(j, chunk, n):
        items.append(chunk[rng.integers(0, len(chunk), size=n)])
        k = drawn[j] + np.arange(n)
        angles.append((k * (360.0 / totals[j]) + (j - 1) * 60.0) % 360.0)
        drawn[j] += n

    for _ in range(ROUNDS_360):
        for a in classes:
            b = (a + 1) % NUM_CLASSES_360
            pair = [chunks[a].pop(), chunks[b].pop()]
            left = [len(pair[0]), len(pair[1])]
            while left[0] > 0 and left[1] > 0:
                n0 = min(int(round(left[0] / (left[0] + left[1]) * batch_size)), left[0])
                n1 = min(batch_size - n0, left[1])
                draw(a, pair[0], n0)
                draw(b, pair[1], n1)
                sizes.append(n0 + n1)
                left[0] -= n0
                left[1] -= n1
    out = np.concatenate(items).astype(np.int32), np.concatenate(angles).astype(np.float32)
    return (*out, np.asarray(sizes, np.int32)) if batches else out


def mnist360_test_angles(y_test, seed: int = 0):
    """Each test image's angle (degrees): class j's N images take `k 360 / N`, k = 0..N-1,
    in a fixed random order."""
    rng = np.random.default_rng([seed, 361])
    angles = np.zeros(len(y_test), np.float32)
    for j in range(NUM_CLASSES_360):
        items = np.flatnonzero(y_test == j)
        angles[rng.permutation(items)] = np.arange(len(items)) * (360.0 / len(items))
    return angles


@functools.lru_cache(maxsize=2)
def _rotate_jit():
    return jax.jit(rotate)


def rotate_numpy(x, angles, batch: int = 2048):
    """`rotate` over a numpy array, in batches (the test set, once)."""
    out = [
        np.asarray(_rotate_jit()(jnp.asarray(x[i : i + batch]), jnp.asarray(angles[i : i + batch])))
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(out) if out else x[:0]


def mnist360(arrays, input_fn):
    """The MNIST-360 stream scenario from MNIST's `(x_tr, y_tr, x_te, y_te)`."""
    x_tr, y_tr, x_te, y_te = arrays
    keep_tr, keep_te = y_tr < NUM_CLASSES_360, y_te < NUM_CLASSES_360
    x_tr, y_tr = x_tr[keep_tr], y_tr[keep_tr]
    x_te, y_te = x_te[keep_te], y_te[keep_te]
    test = functools.lru_cache(maxsize=1)(
        lambda: (rotate_numpy(x_te, mnist360_test_angles(y_te)), y_te)
    )
    return Scenario(
        name="mnist-360",
        num_tasks=1,
        num_classes=10,  # the network's outputs, as Mammoth's MNISTMLP(28 * 28, 10)
        settings=("general",),
        model="mlp",
        input_fn=input_fn,
        train=lambda t: (x_tr, y_tr),
        test=lambda t: test(),
        classes=lambda t: tuple(range(NUM_CLASSES_360)),
        train_sizes=(len(y_tr),),
        stream=lambda seed, batch_size: mnist360_stream(y_tr, batch_size, seed),
        stream_batches=lambda batch_size: mnist360_stream(y_tr, batch_size, 0, batches=True)[2],
    )


def check_run(method, scenario, epochs: int, first_epochs: int | None) -> None:
    """Refuses a run on a stream it cannot make (`check_method`, or more than one pass); a
    scenario that is not a stream passes."""
    if scenario.stream is None:
        return
    check_method(method)
    if epochs != 1 or first_epochs:
        raise ValueError(f"{scenario.name} is a stream, seen once: use 1 epoch (n_epochs=1)")


def check_method(method) -> None:
    """Refuses a method that needs task boundaries (it acts at `begin_task`, `end_task`,
    `begin_task_data`, adds a pool to tasks or resizes between them) on a stream."""
    hooks = ("begin_task", "begin_task_data", "end_task", "train_pool")
    needs = [h for h in hooks if method.does(h)]
    if method.host.resize is not None:
        needs.append("host.resize")
    if needs:
        raise ValueError(
            f"method {method.name!r} needs task boundaries ({', '.join(needs)}), and a stream "
            "has none; on a stream run one of: sgd, joint, er, der, derpp, mer, gss, agem_r"
        )


# ------------------------------------------------------------------ fuzzy task boundaries


def fuzzy_probs(num_tasks: int, iters: int, fuzziness: int) -> np.ndarray:
    """`(T, T * iters)`: each task's probability at each iteration of a stream with fuzzy
    boundaries, as van de Ven's `continual-learning` (`data/labelstream.py`,
    `_probs_per_context`): task 0 holds the first half period and the last, task c >= 1
    the period from `iters / 2 + (c - 1) iters`, each hand-over a linear ramp over
    `2 fuzziness` iterations (the two tasks' probabilities sum to 1)."""
    if not 0 <= 2 * fuzziness <= iters:
        raise ValueError(
            f"fuzziness {fuzziness} must be at most half the {iters} iterations of a task"
        )
    total = num_tasks * iters
    probs = np.zeros((num_tasks, total))
    ramp = (np.arange(2 * fuzziness) + 0.5) / max(2 * fuzziness, 1)

    def period(t, start, end):
        probs[t, start + fuzziness : end - fuzziness] = 1.0
        if fuzziness:
            probs[t, start - fuzziness : start + fuzziness] = ramp
            probs[t, end - fuzziness : end + fuzziness] = 1.0 - ramp

    half = iters // 2
    probs[0, : half - fuzziness] = 1.0
    if fuzziness:
        probs[0, half - fuzziness : half + fuzziness] = 1.0 - ramp
    start = half + (num_tasks - 1) * iters
    if fuzziness:
        probs[0, start - fuzziness : start + fuzziness] = ramp
    probs[0, start + fuzziness :] = 1.0
    for t in range(1, num_tasks):
        period(t, half + (t - 1) * iters, half + t * iters)
    return probs


def fuzzy_stream(task_items, iters: int, fuzziness: int, batch_size: int, seed: int):
    """`(items, None)`: `len(task_items) * iters` batches; each item's task drawn from
    `fuzzy_probs` at its iteration, the item the next of that task's items, reshuffled
    each time they run out (van de Ven's `DataStream`, a label per sample)."""
    rng = np.random.default_rng([seed, 7])
    probs = fuzzy_probs(len(task_items), iters, fuzziness)
    cum = np.cumsum(probs / probs.sum(0, keepdims=True), axis=0)
    u = rng.random((probs.shape[1], batch_size))
    tasks = (u[None] > cum[:, :, None]).sum(0).ravel()  # (iterations * batch,)
    items = np.empty(len(tasks), np.int64)
    for t, pool in enumerate(task_items):
        where = np.flatnonzero(tasks == t)
        rounds = -(-len(where) // len(pool))
        order = np.concatenate([rng.permutation(pool) for _ in range(rounds)])
        items[where] = order[: len(where)]
    return items.astype(np.int32), None


def fuzzy(scenario, fuzziness: int | None = None):
    """A class-incremental scenario as one stream with fuzzy task boundaries (`fuzzy_stream`):
    about one pass over every task's items (`mean task size / batch` iterations a task),
    `fuzziness` iterations of ramp on each side of a boundary (default a quarter of a
    task's iterations); scored at the end on every task's test set (setting "general")."""
    if scenario.stream is not None or scenario.seed_maps is not None:
        raise ValueError(
            f"fuzzy boundaries are for class-incremental benchmarks; {scenario.name} is not one"
        )
    if fuzziness is not None and fuzziness < 0:
        raise ValueError(f"fuzziness must be at least 0 iterations, got {fuzziness}")
    parts = [scenario.train(t) for t in range(scenario.num_tasks)]
    tests = [scenario.test(t) for t in range(scenario.num_tasks)]
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    bounds = np.cumsum([0] + [len(p[1]) for p in parts])
    task_items = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    test = (np.concatenate([t[0] for t in tests]), np.concatenate([t[1] for t in tests]))
    classes = tuple(c for t in range(scenario.num_tasks) for c in scenario.classes(t))

    def stream(seed, batch_size):
        iters = max(1, round(np.mean(scenario.train_sizes) / batch_size))
        fuzz = iters // 4 if fuzziness is None else fuzziness
        return fuzzy_stream(task_items, iters, fuzz, batch_size, seed)

    return Scenario(
        name=f"{scenario.name}-fuzzy",
        num_tasks=1,
        num_classes=scenario.num_classes,
        settings=("general",),
        model=scenario.model,
        input_fn=scenario.input_fn,
        train=lambda t: (x_tr, y_tr),
        test=lambda t: test,
        classes=lambda t: classes,
        train_sizes=(len(y_tr),),
        stream=stream,
    )
