"""MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST): read, verify, download.

A dataset `name` is looked for, file by file, in `DIR/name/`, `DIR/` and
torchvision's `DIR/<Name>/raw/`, as the original `.gz` file (checked against
its known md5) or uncompressed (checked by its IDX header and size).
`download` fetches missing files from the canonical location, checks the md5
and only then moves each file into place, so no half-written file is kept.
"""

from __future__ import annotations

import functools
import gzip
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from cljax.benchmarks.data import DataError, md5sum, record_read, resolve_data_dir

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# md5 of the original .gz files (the same checksums torchvision uses).
MD5 = {
    "mnist": (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
    "fashion_mnist": (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
    "kmnist": (
        "bdb82020997e1d708af4cf47b453dcf7",
        "e144d726b3acfaa3e44228e80efcd344",
        "5c965bf0a639b31b8f53240b1b52f4d7",
        "7320c461ea6c1c855c0b718fb2a4b134",
    ),
}

# sha256 of the same files (from the md5-verified copies; KMNIST's are not known here, so
# its downloads are checked by md5 alone).
SHA256 = {
    "mnist": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
    "fashion_mnist": (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
    "kmnist": (None, None, None, None),
}

URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "kmnist": "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
}

TORCHVISION_DIRS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}


def _check_name(name: str):
    if name not in MD5:
        raise DataError(f"unknown IDX dataset {name!r}; choose one of: {', '.join(MD5)}")


def _candidates(root: Path, name: str) -> list[Path]:
    return [root / name, root, root / TORCHVISION_DIRS[name] / "raw"]


def checksum_problem(path: Path, name: str, index: int) -> str | None:
    """None when file `index` of `name` at `path` has its known md5 and sha256, else what differs."""
    got = md5sum(path)
    if got != MD5[name][index]:
        return f"md5 {got} != {MD5[name][index]}"
    want = SHA256[name][index]
    if want is not None and (got := md5sum(path, "sha256")) != want:
        return f"sha256 {got} != {want}"
    return None


def find_file(root: Path, name: str, index: int) -> Path:
    """Path of file `index` of dataset `name` under `root`, verified; DataError if absent or bad."""
    base = FILES[index]
    dirs = _candidates(root, name)
    for d in dirs:
        gz = d / f"{base}.gz"
        if gz.is_file():
            got = md5sum(gz)
            if got != MD5[name][index]:
                raise DataError(
                    f"corrupt file {gz}: md5 {got} != expected {MD5[name][index]}; delete it "
                    "and rerun with --download, or copy the original file there"
                )
            record_read(gz, got)
            return gz
        raw = d / base
        if raw.is_file():
            record_read(raw)
            return raw
    where = ", ".join(str(d) for d in dirs)
    raise DataError(
        f"missing {base}.gz of {name}: looked in {where}; pass --download (needs internet) "
        f"or copy the original files into {root / name}"
    )


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Decodes IDX bytes (uint8 payload) to an array; DataError on a malformed file."""
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"corrupt file {path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(
            f"corrupt file {path}: {len(data)} bytes, expected {header + int(np.prod(shape))} "
            f"for shape {shape}; delete it and rerun with --download"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=8)
def _read(path: Path) -> np.ndarray:
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read {path}: {e}; delete it and rerun with --download") from e
    return parse_idx(data, path)


def load(name: str, data_dir=None, download: bool = False):
    """`(x_train, y_train, x_test, y_test)` of an IDX dataset: uint8 images (N, 28, 28), labels."""
    _check_name(name)
    root = resolve_data_dir(data_dir)
    if download:
        fetch(name, root)
    arrays = [_read(find_file(root, name, i)) for i in range(4)]
    x_train, y_train, x_test, y_test = arrays
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DataError(f"{name} in {root}: images and labels have different lengths")
    return x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32)


def fetch(name: str, root: Path, base_url: str | None = None, timeout: float = 60.0):
    """Downloads the files of `name` missing from `root/name/`, each verified before it is kept."""
    _check_name(name)
    base_url = base_url or URLS[name]
    target = Path(root) / name
    target.mkdir(parents=True, exist_ok=True)
    for index, base in enumerate(FILES):
        final = target / f"{base}.gz"
        if final.is_file() and checksum_problem(final, name, index) is None:
            continue
        url = base_url + f"{base}.gz"
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{base}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                while chunk := r.read(1 << 20):
                    out.write(chunk)
            problem = checksum_problem(Path(tmp), name, index)
            if problem is not None:
                raise DataError(
                    f"download of {url} is corrupt or truncated ({problem}); "
                    "nothing was kept, try again later"
                )
            os.replace(tmp, final)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise DataError(f"cannot download {url}: {e}; nothing was kept") from e
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
