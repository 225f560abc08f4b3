"""CIFAR-10/100 from the python pickles (`cifar-10-batches-py/`, `cifar-100-python/`)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from cljax.data import DataError, resolve_data_dir

LAYOUT = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


def _read_pickle(path: Path, label_key: bytes):
    if not path.is_file():
        raise DataError(
            f"missing {path.name} (looked in {path.parent}); unpack the CIFAR python "
            "archive there, or use the tensorflow-datasets source"
        )
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        data = np.asarray(entry[b"data"], np.uint8)
        labels = np.asarray(entry[label_key], np.int32)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise DataError(f"corrupt file {path}: {e!r}; replace it with the original") from e
    if len(images) != len(labels):
        raise DataError(f"corrupt file {path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def load(name: str, data_dir=None):
    """`(x_train, y_train, x_test, y_test)` with uint8 images (N, 32, 32, 3)."""
    if name not in LAYOUT:
        raise DataError(f"unknown CIFAR dataset {name!r}; choose cifar10 or cifar100")
    folder, train_files, test_files, label_key = LAYOUT[name]
    root = resolve_data_dir(data_dir) / folder

    def read_all(files):
        parts = [_read_pickle(root / f, label_key) for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return (*read_all(train_files), *read_all(test_files))
