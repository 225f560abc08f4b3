"""CIFAR-10/100 from the python pickles (`cifar-10-batches-py/`, `cifar-100-python/`).

The pickles are read with an unpickler that builds only what the official files
hold (dicts, lists, bytes, str, numbers and numpy arrays): a file that asks for
anything else (a `__reduce__` payload that would run code, say) is refused as "not
a CIFAR batch file" without running it, so a tampered file in a shared data
directory cannot execute anything.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from cljax.benchmarks.data import DataError, record_read, resolve_data_dir

LAYOUT = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


# The globals a CIFAR batch pickle may name: numpy's array and dtype reconstruction (under
# its numpy 1 and numpy 2 module names) and the data constructors pickles of other protocols
# use for arrays and bytes. None of them runs code of the file's choosing.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
}


class NotCifarError(pickle.UnpicklingError):
    """The pickle names something a CIFAR batch file does not hold."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in SAFE_GLOBALS:
            raise NotCifarError(f"it asks for {module}.{name}")
        return super().find_class(module, name)


def safe_load(data: bytes):
    """The object pickled in `data`, built only from the types of `SAFE_GLOBALS`."""
    return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()


def _read_pickle(path: Path, label_key: bytes):
    if not path.is_file():
        raise DataError(
            f"missing {path.name} (looked in {path.parent}); unpack the CIFAR python "
            "archive there, or use the tensorflow-datasets source"
        )
    try:
        entry = safe_load(path.read_bytes())
        if not isinstance(entry, dict):
            raise TypeError(f"holds a {type(entry).__name__}, not a dict")
        data = np.asarray(entry[b"data"], np.uint8)
        labels = np.asarray(entry[label_key], np.int32)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except NotCifarError as e:
        raise DataError(
            f"{path} is not a CIFAR batch file ({e}); it was not loaded: replace it with the original"
        ) from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, IndexError) as e:
        raise DataError(f"corrupt file {path}: {e!r}; replace it with the original") from e
    if len(images) != len(labels):
        raise DataError(f"corrupt file {path}: {len(images)} images but {len(labels)} labels")
    record_read(path)
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
