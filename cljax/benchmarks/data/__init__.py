"""Datasets as numpy arrays: `(x_train, y_train, x_test, y_test)`, images uint8 NHWC or NHW.

Sources: MNIST-format IDX files (`idx`), the CIFAR python pickles (`cifar`),
tensorflow-datasets (`tfds_adapter`, optional extra) and scikit-learn's
bundled 8x8 digits (`digits`). Problems with files raise `DataError`, whose
message is one line that names the file, where it was looked for and how to
get it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENV_VAR = "CLJAX_DATA_DIR"

_READ: dict[str, str] = {}  # every data file this process read: its path -> its md5


def md5sum(path, algorithm: str = "md5") -> str:
    """Hex digest of a file (md5 unless `algorithm` names another hashlib algorithm)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_read(path, md5: str | None = None) -> None:
    """Notes that data file `path` was read (its md5, computed unless given), for the
    provenance results record (`cljax.outputs.results.provenance`)."""
    key = str(Path(path).resolve())
    if key not in _READ:
        _READ[key] = md5 or md5sum(key)


def files_read() -> dict[str, str]:
    """`{path: md5}` of every data file this process has read, in the order first read."""
    return dict(_READ)


class DataError(Exception):
    """Missing, corrupt or unreadable data; the message says what to do."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """`data_dir`, else `$CLJAX_DATA_DIR`; a clear error when neither names a directory."""
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR)
    if data_dir is None:
        raise DataError(
            f"no data directory: pass --data-dir DIR or set ${ENV_VAR} "
            "(it should hold e.g. mnist/train-images-idx3-ubyte.gz; --download fetches them)"
        )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(
            f"data directory {str(path)!r} does not exist: create it and pass --download, "
            "or point --data-dir at the folder that holds the dataset files"
        )
    return path
