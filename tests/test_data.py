"""Data loaders: IDX (real and hand-made), CIFAR pickles, downloads, and their errors."""

import gzip
import hashlib
import http.server
import pickle
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cljax.benchmarks.data import (
    DataError,
    cifar,
    digits,
    files_read,
    idx,
    resolve_data_dir,
    tfds_adapter,
)


def write_idx(path: Path, array: np.ndarray, compress=False):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_real_mnist_loads_with_known_counts(mnist_dir):
    x_tr, y_tr, x_te, y_te = idx.load("mnist", mnist_dir)
    assert x_tr.shape == (60000, 28, 28) and x_te.shape == (10000, 28, 28)
    assert np.bincount(y_tr).tolist()[:3] == [5923, 6742, 5958]
    assert np.bincount(y_te).tolist()[:3] == [980, 1135, 1032]


def test_raw_idx_files_in_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (7, 28, 28))
    labels = rng.integers(0, 10, 7)
    for name, arr in zip(idx.FILES, (imgs, labels, imgs[:3], labels[:3]), strict=True):
        write_idx(raw / name, arr)
    x_tr, y_tr, x_te, y_te = idx.load("mnist", tmp_path)
    np.testing.assert_array_equal(x_tr, imgs)
    np.testing.assert_array_equal(y_te, labels[:3])


def test_truncated_raw_file_is_a_clear_error(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    write_idx(d / idx.FILES[0], np.zeros((4, 28, 28)))
    (d / idx.FILES[0]).write_bytes((d / idx.FILES[0]).read_bytes()[:-10])
    with pytest.raises(DataError, match="corrupt file .*train-images-idx3-ubyte"):
        idx.load("mnist", tmp_path)


def test_gz_with_wrong_md5_is_a_clear_error(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    write_idx(d / f"{idx.FILES[0]}.gz", np.zeros((4, 28, 28)), compress=True)
    with pytest.raises(DataError, match="corrupt file .*md5"):
        idx.load("mnist", tmp_path)


def test_missing_files_and_dirs_say_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte.gz of mnist: looked in"):
        idx.load("mnist", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        idx.load("mnist", tmp_path / "nope")
    monkeypatch.delenv("CLJAX_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="--data-dir"):
        resolve_data_dir(None)
    monkeypatch.setenv("CLJAX_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path


@pytest.fixture
def mirror(mnist_dir, tmp_path):
    """An HTTP server on 127.0.0.1 serving mnist files; some names serve bad bytes."""
    served = tmp_path / "served"
    shutil.copytree(mnist_dir / "mnist", served)
    data = (served / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (served / "truncated").mkdir()
    (served / "corrupt").mkdir()
    for name in idx.FILES:
        good = (served / f"{name}.gz").read_bytes()
        (served / "truncated" / f"{name}.gz").write_bytes(good[: len(good) // 2])
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        (served / "corrupt" / f"{name}.gz").write_bytes(bytes(bad))
    assert data

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_verifies_and_keeps_only_good_files(mirror, tmp_path, monkeypatch):
    dest = tmp_path / "data"
    for bad in ("truncated", "corrupt"):
        with pytest.raises(DataError, match="corrupt or truncated.*nothing was kept"):
            idx.fetch("mnist", dest, base_url=f"{mirror}{bad}/")
        assert list((dest / "mnist").iterdir()) == []
    with pytest.raises(DataError, match="cannot download"):
        idx.fetch("mnist", dest, base_url=f"{mirror}absent/")
    assert list((dest / "mnist").iterdir()) == []
    # a file whose md5 matches but whose sha256 does not (a collision) is refused too
    sha = list(idx.SHA256["mnist"])
    sha[3] = "0" * 64
    monkeypatch.setitem(idx.SHA256, "mnist", tuple(sha))
    with pytest.raises(DataError, match="corrupt or truncated \\(sha256 "):
        idx.fetch("mnist", dest, base_url=mirror)
    assert not (dest / "mnist" / f"{idx.FILES[3]}.gz").exists()
    monkeypatch.undo()
    idx.fetch("mnist", dest, base_url=mirror)
    for i, name in enumerate(idx.FILES):
        path = dest / "mnist" / f"{name}.gz"
        assert hashlib.md5(path.read_bytes()).hexdigest() == idx.MD5["mnist"][i]
    assert idx.load("mnist", dest)[0].shape == (60000, 28, 28)


def test_cifar_pickles_written_by_the_test(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, 4).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    x_tr, y_tr, x_te, y_te = cifar.load("cifar10", tmp_path)
    assert x_tr.shape == (20, 32, 32, 3) and x_te.shape == (4, 32, 32, 3)
    # Channel-last conversion: pixel (0, 0) of image 0 is data[0, [0, 1024, 2048]].
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f)[b"data"]
    np.testing.assert_array_equal(x_tr[0, 0, 0], raw[0, [0, 1024, 2048]])
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="corrupt file .*test_batch"):
        cifar.load("cifar10", tmp_path)
    with pytest.raises(DataError, match="missing train"):
        cifar.load("cifar100", tmp_path)


class _Payload:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, protocol):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    marker = tmp_path / "ran"
    entry = {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]}
    (folder / "test").write_bytes(pickle.dumps(entry, protocol=protocol))
    (folder / "train").write_bytes(pickle.dumps({**entry, b"x": _Payload(marker)}, protocol=2))
    with pytest.raises(DataError, match=r"train is not a CIFAR batch file \(it asks for .*system"):
        cifar.load("cifar100", tmp_path)
    assert not marker.exists()
    # the same file's data without the payload loads, in every pickle protocol numpy writes
    (folder / "train").write_bytes(pickle.dumps(entry, protocol=protocol))
    assert cifar.load("cifar100", tmp_path)[0].shape == (2, 32, 32, 3)


def test_digits_needs_no_files():
    x_tr, y_tr, x_te, y_te = digits.load()
    assert x_tr.shape == (1437, 8, 8) and x_te.shape == (360, 8, 8)
    assert x_tr.max() <= 16 and set(np.unique(y_te)) == set(range(10))


def test_tfds_adapter_errors_clearly(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_tfds(name, *args, **kwargs):
        if name == "tensorflow_datasets":
            raise ImportError("no tfds")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tfds)
    with pytest.raises(DataError, match=r"pip install 'cljax\[tfds\]'"):
        tfds_adapter.load("mnist", tmp_path)


class _FakeTfds:
    """A stand-in for `tensorflow_datasets`: `data_source` returns `sources`."""

    def __init__(self, sources):
        self.sources = sources

    def data_source(self, name, data_dir=None, download=False):
        return self.sources


class _Records(list):
    """A split's records with tfds's `dataset_info` attribute."""

    def __init__(self, items, dataset_info):
        super().__init__(items)
        self.dataset_info = dataset_info


def test_tfds_adapter_reads_splits_and_refuses_an_unprepared_dataset(monkeypatch, tmp_path):
    record = lambda label: {"image": np.full((4, 4, 3), label, np.uint8), "label": label}  # noqa: E731
    fake = _FakeTfds({"train": [record(1), record(2)], "test": [record(3)]})
    monkeypatch.setattr(tfds_adapter, "_tfds", lambda: fake)
    x_tr, y_tr, x_te, y_te = tfds_adapter.load("cifar10", tmp_path)
    assert x_tr.shape == (2, 4, 4, 3) and x_tr.dtype == np.uint8 and x_te[0, 0, 0, 0] == 3
    assert y_tr.tolist() == [1, 2] and y_te.tolist() == [3]
    # provenance: the shard files a split is read from, as tfds's DatasetInfo lists them
    shards = {
        split: tmp_path / f"cifar10-{split}.array_record-00000-of-00001" for split in fake.sources
    }
    for split, path in shards.items():
        path.write_bytes(split.encode())
    info = SimpleNamespace(splits={k: SimpleNamespace(filepaths=[v]) for k, v in shards.items()})
    fake = _FakeTfds({k: _Records(v, info) for k, v in fake.sources.items()})
    monkeypatch.setattr(tfds_adapter, "_tfds", lambda: fake)
    tfds_adapter.load("cifar10", tmp_path)
    read = files_read()
    assert read[str(shards["train"].resolve())] == hashlib.md5(b"train").hexdigest()
    assert str(shards["test"].resolve()) in read
    # offline, tfds hands back a source without splits for a dataset never prepared
    monkeypatch.setattr(tfds_adapter, "_tfds", lambda: _FakeTfds({}))
    with pytest.raises(DataError, match=r"no prepared 'cifar10' .*no 'train' split.*--download"):
        tfds_adapter.load("cifar10", tmp_path)
