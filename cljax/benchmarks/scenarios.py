"""Benchmarks as sequences of tasks over numpy arrays.

A `Scenario` hands out each task's training and test arrays (raw uint8 images
and int32 labels) and an `input_fn(x, key, train)` that turns raw images into
the network's float input inside `jit` (scaling, normalisation, and for CIFAR and Tiny ImageNet
the random crop and flip when `train`). Class-incremental benchmarks split the
classes into tasks in label order and are evaluated both class-IL (all classes
seen so far) and task-IL (the task's own classes); domain-incremental ones
(perm-mnist, rot-mnist) apply one transform per task to the whole dataset and
keep one 10-way head.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from cljax.benchmarks.data import DataError, cifar, digits, idx, tfds_adapter, tinyimagenet
from cljax.benchmarks.scenario import (  # noqa: F401  (this module's names since before they moved)
    Scenario,
    apply_maps,
    domain_maps,
    permutation,
    permutation_map,
    rotation,
    rotation_map,
)

BENCHMARKS = (
    "seq-digits",
    "seq-mnist",
    "split-mnist",
    "split-mnist-task",
    "split-mnist-domain",
    "seq-fashion-mnist",
    "perm-mnist",
    "permuted-mnist",
    "rot-mnist",
    "mnist-360",
    "seq-cifar10",
    "seq-cifar100",
    "seq-tinyimg",
    "seq-svhn",
)


# ---------------------------------------------------------------- inputs


def scaled_input(scale: float):
    """`input_fn` that maps uint8 pixels to floats in [0, 1] (no augmentation)."""

    def input_fn(x, key, train):
        del key, train
        return x.astype(jnp.float32) / scale

    input_fn.normalization = ((0.0,), (1.0,))  # the mean and std it subtracts and divides by
    return input_fn


def cifar_input(mean, std, pad: int = 4, brightness: float = 0.0):
    """`input_fn` for RGB images of any size (CIFAR's 32x32, TinyImageNet's 64x64): random crop
    to the input's size (zero padding `pad`) and flip when training,
    and with `brightness` b > 0 torchvision's `ColorJitter(brightness=b)`: pixels (in [0, 1])
    times a factor drawn from U(max(0, 1 - b), 1 + b), clipped to [0, 1]."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def augment_one(img, key):
        k_crop, k_flip = jax.random.split(key)
        h, w = img.shape[:2]
        padded = jnp.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        dy, dx = jax.random.randint(k_crop, (2,), 0, 2 * pad + 1)
        img = jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, img.shape[2]))
        img = jnp.where(jax.random.bernoulli(k_flip), img[:, ::-1], img)
        if brightness:  # after the crop and flip, as the DER code's transforms
            low, high = max(0.0, 1.0 - brightness), 1.0 + brightness
            factor = jax.random.uniform(jax.random.fold_in(key, 2), (), minval=low, maxval=high)
            img = jnp.clip(img * factor, 0.0, 1.0)
        return img

    def input_fn(x, key, train):
        x = x.astype(jnp.float32) / 255.0
        if train:
            x = jax.vmap(augment_one)(x, jax.random.split(key, x.shape[0]))
        return (x - mean) / std

    input_fn.normalization = (tuple(map(float, mean)), tuple(map(float, std)))
    return input_fn


CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
# Mammoth's Seq-TinyImageNet Normalize (datasets/seq_tinyimagenet.py, the DER paper's and today's)
TINYIMG_STATS = ((0.4802, 0.4480, 0.3975), (0.2770, 0.2691, 0.2821))

# The fixed class orders of the expandable-representation authors' code
# (DER-ClassIL.pytorch, inclearn/datasets/dataset.py: CIFAR-10's, and CIFAR-100's of
# `trial: 2`, PODNet's, which its configs run). Class `ORDER[i]` becomes label i.
CLASS_ORDERS = {
    "der": {
        "seq-cifar10": (4, 0, 2, 5, 8, 3, 1, 6, 9, 7),
        "seq-cifar100": (
            87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86,
            84, 96, 18, 24, 32, 45, 88, 11, 4, 67, 69, 66, 77, 47, 79, 93, 29, 50, 57, 83,
            17, 81, 41, 12, 37, 59, 25, 20, 80, 73, 1, 28, 6, 46, 62, 82, 53, 9, 31, 75,
            38, 63, 33, 74, 27, 22, 36, 3, 16, 21, 60, 19, 70, 90, 89, 43, 5, 42, 65, 76,
            40, 30, 23, 85, 2, 95, 56, 48, 71, 64, 98, 13, 99, 7, 34, 55, 54, 26, 35, 39,
        ),
    },
}  # fmt: skip


def seeded_class_order(num_classes: int, seed: int) -> tuple[int, ...]:
    """The class order van de Ven et al.'s code (GMvandeVen/continual-learning,
    data/load.py) gives its seed `seed`: class y becomes label `p[y]`, `p` numpy's
    `np.random.permutation` right after `np.random.seed(seed)`; seed 0 keeps label order
    (its `exception`). Returned as `reorder_classes`' order (`order[i]` becomes label i)."""
    if seed == 0:
        return tuple(range(num_classes))
    p = np.random.RandomState(seed).permutation(num_classes)
    return tuple(int(c) for c in np.argsort(p))


def reorder_classes(arrays, order):
    """`(x_tr, y_tr, x_te, y_te)` with class `order[i]` relabelled `i` (the official code's
    `_map_new_class_index`), so tasks take the classes in that order."""
    x_tr, y_tr, x_te, y_te = arrays
    new_label = np.empty(len(order), np.int64)
    new_label[np.asarray(order)] = np.arange(len(order))
    return x_tr, new_label[y_tr].astype(y_tr.dtype), x_te, new_label[y_te].astype(y_te.dtype)


# ---------------------------------------------------------------- builders


def benchmark_name(name: str, base_classes: int = 0) -> str:
    """`NAME-bB` for a class-incremental benchmark whose first task holds B classes."""
    return f"{name}-b{base_classes}" if base_classes else name


def class_incremental(
    name, arrays, num_tasks, input_fn, model, num_classes=None, base_classes=0
) -> Scenario:
    """Splits classes 0..C-1 into `num_tasks` equal groups in label order; with
    `base_classes` B > 0 the first task holds classes 0..B-1 and the other C-B are split
    equally over the remaining tasks (PyCIL's `init_cls`, the DER paper's "B50"), and
    the scenario is named `NAME-bB`."""
    x_tr, y_tr, x_te, y_te = arrays
    num_classes = num_classes or int(max(y_tr.max(), y_te.max())) + 1
    if base_classes:
        rest, steps = num_classes - base_classes, num_tasks - 1
        if not 0 < base_classes < num_classes:
            raise ValueError(
                f"{name}: a first task of {base_classes} classes must leave some of the "
                f"{num_classes} classes for later tasks; choose 1 to {num_classes - 1}"
            )
        if steps < 1 or rest % steps:
            raise ValueError(
                f"{name}: a first task of {base_classes} classes leaves {rest} of "
                f"{num_classes} classes, which cannot be split into {steps} equal tasks; "
                f"choose --tasks so that 1 + a divisor of {rest} tasks remain"
            )
        bounds = [0, *range(base_classes, num_classes + 1, rest // steps)]
        name = benchmark_name(name, base_classes)
    else:
        if num_tasks < 1 or num_classes % num_tasks:
            raise ValueError(
                f"{name}: {num_classes} classes cannot be split into {num_tasks} equal tasks; "
                f"choose a divisor of {num_classes}"
            )
        bounds = list(range(0, num_classes + 1, num_classes // num_tasks))

    def classes(t):
        return tuple(range(bounds[t], bounds[t + 1]))

    def pick(x, y, t):
        mask = (y >= bounds[t]) & (y < bounds[t + 1])
        return x[mask], y[mask]

    return Scenario(
        name=name,
        num_tasks=num_tasks,
        num_classes=num_classes,
        settings=("class-il", "task-il"),
        model=model,
        input_fn=input_fn,
        train=lambda t: pick(x_tr, y_tr, t),
        test=lambda t: pick(x_te, y_te, t),
        classes=classes,
        train_sizes=tuple(int(np.isin(y_tr, classes(t)).sum()) for t in range(num_tasks)),
    )


def within_task_labels(scenario: Scenario, name: str) -> Scenario:
    """The domain-incremental form of a class-incremental `scenario` with equal tasks (van de
    Ven et al.'s domain scenario): each task's classes relabelled 0..k-1 in order (its
    `y - labels[0]`), one k-way head for every task, scored domain-IL."""
    k = len(scenario.classes(0))
    if any(len(scenario.classes(t)) != k for t in range(scenario.num_tasks)):
        raise ValueError(f"{name}: the tasks must hold equally many classes to share one head")

    def relabel(split):
        def part(t):
            x, y = split(t)
            return x, (y - scenario.classes(t)[0]).astype(y.dtype)

        return part

    return dataclasses.replace(
        scenario,
        name=name,
        num_classes=k,
        settings=("domain-il",),
        train=relabel(scenario.train),
        test=relabel(scenario.test),
        classes=lambda t: tuple(range(k)),
    )


def split_validation(scenario: Scenario, fraction: float, seed: int = 0):
    """`(scenario without the held-out images, valid)`: `valid(t)` is a random `fraction` of
    task t's training data (drawn with `seed`), which the returned scenario no longer trains
    on. For model selection on data the test set never sees, as the DGM authors' code does
    (15% of each task's training images)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")

    def parts(t):
        x, y = scenario.train(t)
        order = np.random.default_rng([seed, t]).permutation(len(y))
        n_valid = int(fraction * len(y))
        if n_valid == 0 or n_valid == len(y):
            raise ValueError(
                f"{scenario.name} task {t + 1}: {len(y)} training images leave nothing to "
                f"hold out (or to train on) at a validation fraction of {fraction}"
            )
        keep, held = np.sort(order[n_valid:]), np.sort(order[:n_valid])
        return (x[keep], y[keep]), (x[held], y[held])

    sizes = tuple(n - int(fraction * n) for n in scenario.train_sizes)
    reduced = dataclasses.replace(scenario, train=lambda t: parts(t)[0], train_sizes=sizes)
    return reduced, lambda t: parts(t)[1]


def held_out(arrays, fraction: float, seed: int = 0):
    """`(x_keep, y_keep, x_valid, y_valid)`: `arrays`' training set `(x_tr, y_tr, ...)` with a
    random `fraction` of each class's images held out (drawn with `seed`) as the validation
    set, which then stands where the test set stood: a benchmark built on these arrays trains
    on the rest and is scored on the held-out images, so a grid is searched without the
    test set (the DER paper: 10% of the training set)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    x_tr, y_tr = arrays[0], arrays[1]
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y_tr):
        idx_c = np.flatnonzero(y_tr == c)
        n_valid = int(fraction * len(idx_c))
        if n_valid == 0 or n_valid == len(idx_c):
            raise ValueError(
                f"class {c}: {len(idx_c)} training images leave nothing to hold out (or to "
                f"train on) at a validation fraction of {fraction}"
            )
        held.append(rng.choice(idx_c, n_valid, replace=False))
    valid = np.zeros(len(y_tr), bool)
    valid[np.concatenate(held)] = True
    return x_tr[~valid], y_tr[~valid], x_tr[valid], y_tr[valid]


def domain_incremental(
    name, arrays, transforms, input_fn, model, seed_maps=None, raw=None
) -> Scenario:
    """One task per transform (a function of uint8 images (N, H, W)), all classes each time;
    `seed_maps` and `raw` as `Scenario`'s, when the transforms are drawn per seed."""
    x_tr, y_tr, x_te, y_te = arrays
    num_classes = int(y_tr.max()) + 1
    return Scenario(
        seed_maps=seed_maps,
        raw=raw,
        name=name,
        num_tasks=len(transforms),
        num_classes=num_classes,
        settings=("domain-il",),
        model=model,
        input_fn=input_fn,
        train=lambda t: (transforms[t](x_tr), y_tr),
        test=lambda t: (transforms[t](x_te), y_te),
        classes=lambda t: tuple(range(num_classes)),
        train_sizes=(len(y_tr),) * len(transforms),
    )


def vdv_permutation_maps(seed: int, num_tasks: int, size: int):
    """`(src, keep)`, each `(num_tasks, size)`: the pixel permutations van de Ven et al.'s code
    draws for its seed (`np.random.permutation(size)` per context after `np.random.seed(seed)`,
    data/load.py), its seed 0 leaving the first context unpermuted (its `exception`)."""
    rng = np.random.RandomState(seed)
    if seed == 0:
        perms = [np.arange(size)] + [rng.permutation(size) for _ in range(num_tasks - 1)]
    else:
        perms = [rng.permutation(size) for _ in range(num_tasks)]
    return np.stack(perms).astype(np.int32), np.ones((num_tasks, size), bool)


# the domain-incremental benchmarks of per-seed pixel maps (`mapped_domain`)
PIXEL_MAP_BENCHMARKS = ("perm-mnist", "permuted-mnist", "rot-mnist")


def mapped_domain(name, arrays, maps, seed: int, model: str) -> Scenario:
    """A domain-incremental benchmark of pixel maps drawn per run seed: `maps(seed)` gives
    every task's `(src, keep)`; the scenario's own tasks are those of `seed`."""
    src, keep = maps(seed)
    transforms = [
        functools.partial(apply_maps, src=a, keep=b) for a, b in zip(src, keep, strict=True)
    ]
    raw = lambda split: arrays[:2] if split == "train" else arrays[2:]  # noqa: E731
    return domain_incremental(
        name, arrays, transforms, scaled_input(255.0), model, seed_maps=maps, raw=raw
    )


def _cifar_arrays(name, data_dir, download):
    try:
        return cifar.load(name, data_dir)
    except DataError as pickle_error:
        try:
            return tfds_adapter.load(name, data_dir, download=download)
        except DataError as tfds_error:
            raise DataError(f"{pickle_error} | or via tfds: {tfds_error}") from tfds_error


def build(
    name: str,
    data_dir=None,
    download: bool = False,
    num_tasks: int | None = None,
    seed: int = 0,
    base_classes: int = 0,
    class_order: str = "label",
    brightness: float = 0.0,
    valid_fraction: float = 0.0,
    class_seed: int = 0,
) -> Scenario:
    """The benchmark `name` (one of `BENCHMARKS`); `seed` fixes perm/rot-mnist's transforms;
    `valid_fraction` > 0 builds it on `held_out`'s split: trained on the rest of the training
    set and scored on that fraction of it, for model selection;
    `base_classes` > 0 gives a class-incremental benchmark a larger first task (then
    `num_tasks`, the first one included, must be given). `class_order` "label" takes the
    classes in label order, another name one of `CLASS_ORDERS`; `brightness` > 0 adds a
    colour jitter to CIFAR's training augmentation (`cifar_input`); `class_seed` N > 0 shuffles
    a class-incremental benchmark's classes before they are split into tasks as van de Ven
    et al.'s code does for its seed N (`seeded_class_order`).

    `split-mnist` is van de Ven et al.'s Split MNIST ("Three types of incremental learning",
    2022): MNIST's 28x28 images in [0, 1], five tasks of two classes, and the backbone of
    that code (`mlp-400`); its protocol (2000 steps of 128 a task, every batch full) comes
    with each method's tuned row. Its classes are shuffled per seed by that code; here by
    `class_seed` (one run per seed: `experiments/reproduce_vdv.py`). `split-mnist-task` is its
    task-incremental scenario: the same tasks scored task-IL only, the methods' rows training a
    head per task (`task_heads=2`); `split-mnist-domain` its domain-incremental one: each task's
    two classes labelled 0 and 1 (`within_task_labels`). `permuted-mnist` is that code's
    permMNIST: MNIST padded to 32x32, ten tasks of its own pixel permutation per run seed
    (`vdv_permutation_maps`), domain-IL, its 1000-1000 MLP (`mlp-1000`)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    if class_order != "label" and name not in CLASS_ORDERS.get(class_order, {}):
        has = [o for o, table in CLASS_ORDERS.items() if name in table]
        raise ValueError(
            f"class order {class_order!r} is not defined for {name}; choose label"
            + "".join(f" or {o}" for o in has)
        )
    if brightness and name not in ("seq-cifar10", "seq-cifar100"):
        raise ValueError(f"brightness jitter is a CIFAR augmentation; {name} has none, use 0")
    if (base_classes or num_tasks) and name == "mnist-360":
        raise ValueError("mnist-360 is a stream without tasks: drop --tasks / the base classes")
    if base_classes and name in PIXEL_MAP_BENCHMARKS:
        raise ValueError(f"{name} is domain-incremental: every task has all classes, no base")
    if base_classes and num_tasks is None:
        raise ValueError(
            f"a first task of {base_classes} classes needs the number of tasks, the first "
            "included (e.g. --tasks 6 for seq-cifar100's B50 in steps of 10)"
        )
    if class_seed and (class_order != "label" or name in (*PIXEL_MAP_BENCHMARKS, "mnist-360")):
        raise ValueError(
            "class_seed shuffles a class-incremental benchmark's classes: use it with class "
            f"order label on a class-split benchmark, not {class_order!r} on {name}"
        )
    split = functools.partial(class_incremental, base_classes=base_classes)
    if valid_fraction and not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {valid_fraction}")

    def load(arrays):  # the split `valid_fraction` asks for, or the arrays as they are
        if class_seed:
            arrays = reorder_classes(
                arrays, seeded_class_order(int(arrays[1].max()) + 1, class_seed)
            )
        return held_out(arrays, valid_fraction) if valid_fraction else arrays

    if name == "seq-digits":
        return split(name, load(digits.load()), num_tasks or 5, scaled_input(16.0), "mlp")
    if name in ("split-mnist", "split-mnist-task", "split-mnist-domain"):
        arrays = load(idx.load("mnist", data_dir, download))
        sc = split("split-mnist", arrays, num_tasks or 5, scaled_input(255.0), "mlp-400")
        if name == "split-mnist-task":  # scored task-IL only; its rows train a head per task
            return dataclasses.replace(sc, name=name, settings=("task-il",))
        return within_task_labels(sc, name) if name == "split-mnist-domain" else sc
    if name in ("seq-mnist", "seq-fashion-mnist"):
        arrays = load(
            idx.load("mnist" if name == "seq-mnist" else "fashion_mnist", data_dir, download)
        )
        return split(name, arrays, num_tasks or 5, scaled_input(255.0), "mlp")
    if name == "mnist-360":
        from cljax.benchmarks import streams

        return streams.mnist360(load(idx.load("mnist", data_dir, download)), scaled_input(255.0))
    if name == "permuted-mnist":  # van de Ven et al.'s permMNIST: 32x32 (Pad(2)), 10 contexts
        x_tr, y_tr, x_te, y_te = load(idx.load("mnist", data_dir, download))
        pad = lambda x: np.pad(x, ((0, 0), (2, 2), (2, 2)))  # noqa: E731
        arrays = (pad(x_tr), y_tr, pad(x_te), y_te)
        maps = functools.partial(vdv_permutation_maps, num_tasks=num_tasks or 10, size=32 * 32)
        return mapped_domain(name, arrays, maps, seed, "mlp-1000")
    if name in ("perm-mnist", "rot-mnist"):
        arrays = load(idx.load("mnist", data_dir, download))
        shape = arrays[0].shape[1:]
        maps = functools.partial(domain_maps, name, num_tasks=num_tasks or 20, shape=shape)
        return mapped_domain(name, arrays, maps, seed, "mlp")
    if name == "seq-tinyimg":  # Mammoth's: RandomCrop(64, padding=4), flip, Normalize
        arrays = load(tinyimagenet.load(data_dir, download))
        return split(name, arrays, num_tasks or 10, cifar_input(*TINYIMG_STATS), "resnet18")
    if name == "seq-svhn":  # digits: no flips; pixels in [0, 1] as the GAN replay expects
        arrays = load(tfds_adapter.load("svhn_cropped", data_dir, download=download))
        return split(name, arrays, num_tasks or 5, scaled_input(255.0), "resnet18")
    dataset = "cifar10" if name == "seq-cifar10" else "cifar100"
    stats = CIFAR10_STATS if dataset == "cifar10" else CIFAR100_STATS
    arrays = load(_cifar_arrays(dataset, data_dir, download))
    if class_order != "label":
        arrays = reorder_classes(arrays, CLASS_ORDERS[class_order][name])
    default_tasks = 5 if dataset == "cifar10" else 10
    input_fn = cifar_input(*stats, brightness=brightness)
    return split(name, arrays, num_tasks or default_tasks, input_fn, "resnet18")
