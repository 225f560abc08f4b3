"""Tiny ImageNet (200 classes, 64x64 RGB) as the DER paper's framework reads it.

Looked for under the data directory in this order:

- `TINYIMG/processed/`: the `.npy` files the DER paper's framework (Mammoth,
  `datasets/seq_tinyimagenet.py`) distributes and reads, `x_train_01.npy` to
  `x_train_20.npy`, and `y_train_*`, `x_val_*`, `y_val_*` alike, concatenated in number
  order. Their images are floats in [0, 1] that the reference turns into pixels with
  `np.uint8(255 * x)` (truncating, not rounding), as done here.
- `tiny-imagenet-200/`: the official archive unzipped: `wnids.txt` (the classes),
  `train/<wnid>/images/*.JPEG` and `val/images/*.JPEG` with their classes in
  `val/val_annotations.txt`, decoded with Pillow (the archive's few grey images repeated
  to RGB). Training images come class by class, each class's in file-name order; the
  validation images in the order of `val_annotations.txt`.

The test set is the validation split, as in the reference (the archive's test images have
no labels). Class `i` is line `i` of the official `wnids.txt` (`WNIDS`), the order of the
reference's labels (Mammoth's `CLASS_NAMES` lists the classes in it), not the sorted order
torchvision's `ImageFolder` would give; a `wnids.txt` holding the 200 classes in another
order is refused. JPEG decoders may differ from the one that made the `.npy` files by a
pixel level here and there.

Provenance (`cljax.benchmarks.data.files_read`): `wnids.txt` and `val_annotations.txt` with their md5;
each image folder (`train/`, `val/`, `processed/`) as one entry whose md5 is that of its
files' relative paths, sizes and bytes in the order read (110,000 JPEGs are not 110,000
entries). Nothing is downloaded: the archive is a manual step.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from cljax.benchmarks.data import DataError, record_read, resolve_data_dir

FOLDER = "tiny-imagenet-200"
PROCESSED = Path("TINYIMG") / "processed"  # Mammoth's base_path() + 'TINYIMG'
CHUNKS = 20  # x_train_01.npy .. x_train_20.npy, and alike
SHAPE = (64, 64, 3)
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"

# The official wnids.txt, line by line: class i of the reference's labels.
WNIDS = tuple(
    """
    n02124075 n04067472 n04540053 n04099969 n07749582 n01641577 n02802426 n09246464 n07920052
    n03970156 n03891332 n02106662 n03201208 n02279972 n02132136 n04146614 n07873807 n02364673
    n04507155 n03854065 n03838899 n03733131 n01443537 n07875152 n03544143 n09428293 n03085013
    n02437312 n07614500 n03804744 n04265275 n02963159 n02486410 n01944390 n09256479 n02058221
    n04275548 n02321529 n02769748 n02099712 n07695742 n02056570 n02281406 n01774750 n02509815
    n03983396 n07753592 n04254777 n02233338 n04008634 n02823428 n02236044 n03393912 n07583066
    n04074963 n01629819 n09332890 n02481823 n03902125 n03404251 n09193705 n03637318 n04456115
    n02666196 n03796401 n02795169 n02123045 n01855672 n01882714 n02917067 n02988304 n04398044
    n02843684 n02423022 n02669723 n04465501 n02165456 n03770439 n02099601 n04486054 n02950826
    n03814639 n04259630 n03424325 n02948072 n03179701 n03400231 n02206856 n03160309 n01984695
    n03977966 n03584254 n04023962 n02814860 n01910747 n04596742 n03992509 n04133789 n03937543
    n02927161 n01945685 n02395406 n02125311 n03126707 n04532106 n02268443 n02977058 n07734744
    n03599486 n04562935 n03014705 n04251144 n04356056 n02190166 n03670208 n02002724 n02074367
    n04285008 n04560804 n04366367 n02403003 n07615774 n04501370 n03026506 n02906734 n01770393
    n04597913 n03930313 n04118538 n04179913 n04311004 n02123394 n04070727 n02793495 n02730930
    n02094433 n04371430 n04328186 n03649909 n04417672 n03388043 n01774384 n02837789 n07579787
    n04399382 n02791270 n03089624 n02814533 n04149813 n07747607 n03355925 n01983481 n04487081
    n03250847 n03255030 n02892201 n02883205 n03100240 n02415577 n02480495 n01698640 n01784675
    n04376876 n03444034 n01917289 n01950731 n03042490 n07711569 n04532670 n03763968 n07768694
    n02999410 n03617480 n06596364 n01768244 n02410509 n03976657 n01742172 n03980874 n02808440
    n02226429 n02231487 n02085620 n01644900 n02129165 n02699494 n03837869 n02815834 n07720875
    n02788148 n02909870 n03706229 n07871810 n03447447 n02113799 n12267677 n03662601 n02841315
    n07715103 n02504458
    """.split()
)


class _FolderDigest:
    """md5 of a folder's files as read: each one's relative path, size and bytes."""

    def __init__(self, folder: Path):
        self.folder, self.md5 = folder, hashlib.md5()

    def read(self, path: Path) -> bytes:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}") from e
        self.md5.update(f"{path.relative_to(self.folder).as_posix()}\0{len(data)}\0".encode())
        self.md5.update(data)
        return data

    def record(self) -> None:
        record_read(self.folder, self.md5.hexdigest())


_AGAIN = f"unzip the official archive ({URL}) again"


def load(data_dir=None, download: bool = False):
    """`(x_train, y_train, x_test, y_test)`: uint8 images (N, 64, 64, 3), int32 labels 0..199,
    the test set being the validation split; from `TINYIMG/processed/` or `tiny-imagenet-200/`
    under `data_dir` (module docstring). `download` is refused: the archive is fetched by hand."""
    root = resolve_data_dir(data_dir)
    if (root / PROCESSED).is_dir():
        return load_processed(root / PROCESSED)
    if (root / FOLDER).is_dir():
        return load_folder(root / FOLDER)
    how = "cljax does not download it: " if download else ""
    raise DataError(
        f"no Tiny ImageNet in {root}: looked for {FOLDER}/ and {PROCESSED}/; {how}unzip {URL} "
        f"there, or put the DER framework's x/y_train/val_NN.npy files in {root / PROCESSED}"
    )


def _npy(path: Path, digest: _FolderDigest) -> np.ndarray:
    if not path.is_file():
        raise DataError(
            f"missing {path.name} (looked in {path.parent}); the DER framework's processed "
            f"Tiny ImageNet has {CHUNKS} x_ and y_ files per split"
        )
    try:
        return np.load(io.BytesIO(digest.read(path)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"corrupt file {path}: {e}; replace it with the original") from None


def load_processed(folder: Path):
    """The DER framework's `.npy` files in `folder`, as the reference turns them into pixels."""
    digest = _FolderDigest(folder)

    def split(name):
        xs, ys = [], []
        for n in range(1, CHUNKS + 1):
            x_path, y_path = folder / f"x_{name}_{n:02d}.npy", folder / f"y_{name}_{n:02d}.npy"
            x, y = _npy(x_path, digest), _npy(y_path, digest)
            if x.ndim != 4 or x.shape[1:] != SHAPE or not np.issubdtype(x.dtype, np.floating):
                raise DataError(
                    f"corrupt file {x_path}: {x.dtype} {x.shape}, expected floats (N, 64, 64, 3)"
                )
            if len(x) and not (x.min() >= 0.0 and x.max() <= 1.0):
                raise DataError(f"corrupt file {x_path}: pixels outside [0, 1]")
            ok = y.ndim == 1 and len(y) == len(x) and np.issubdtype(y.dtype, np.number)
            labels = y.astype(np.int64) if ok else None
            if labels is None or np.any(labels != y):
                raise DataError(
                    f"corrupt file {y_path}: {y.dtype} {y.shape}, expected {len(x)} integer labels"
                )
            if len(y) and not (labels.min() >= 0 and labels.max() < len(WNIDS)):
                raise DataError(f"corrupt file {y_path}: labels outside 0..{len(WNIDS) - 1}")
            xs.append((255 * x).astype(np.uint8))  # the reference's np.uint8(255 * img)
            ys.append(labels.astype(np.int32))
        return np.concatenate(xs), np.concatenate(ys)

    arrays = (*split("train"), *split("val"))
    digest.record()
    return arrays


def read_wnids(path: Path) -> tuple[str, ...]:
    """The classes of `wnids.txt`, in its order; refused when it holds the official 200 in
    another order (its labels would not be the reference's)."""
    if not path.is_file():
        raise DataError(f"missing {path.name} in {path.parent}: {_AGAIN}")
    wnids = tuple(path.read_text().split())
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"corrupt file {path}: no classes, or a class listed twice; {_AGAIN}")
    if wnids != WNIDS and sorted(wnids) == sorted(WNIDS):
        raise DataError(
            f"{path} lists the 200 classes in another order than the official file, whose order "
            f"the reference's labels follow; {_AGAIN}"
        )
    record_read(path)
    return wnids


def _val_items(folder: Path, label: dict[str, int]) -> list[tuple[Path, int]]:
    path = folder / "val" / "val_annotations.txt"
    if not path.is_file():
        raise DataError(f"missing {path.name} in {path.parent}: {_AGAIN}")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2 or fields[1] not in label:
            raise DataError(
                f"corrupt file {path}, line {n}: expected 'FILE<tab>WNID...' with a class of "
                f"wnids.txt, got {line[:60]!r}; {_AGAIN}"
            )
        items.append((folder / "val" / "images" / fields[0], label[fields[1]]))
    record_read(path)
    return items


def _decode(folder: Path, items: list[tuple[Path, int]]):
    from PIL import Image  # Pillow: installed with matplotlib, a dependency

    digest = _FolderDigest(folder)
    x = np.empty((len(items), *SHAPE), np.uint8)
    for i, (path, _) in enumerate(items):
        if not path.is_file():
            raise DataError(f"missing {path.name} (looked in {path.parent}); {_AGAIN}")
        try:
            with Image.open(io.BytesIO(digest.read(path))) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"corrupt image {path}: {e}; {_AGAIN}") from None
        if pixels.shape != SHAPE:
            raise DataError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, not 64x64; {_AGAIN}")
        x[i] = pixels
    digest.record()
    return x, np.array([y for _, y in items], np.int32)


def load_folder(folder: Path):
    """The official `tiny-imagenet-200/` folder: training images and the validation split."""
    wnids = read_wnids(folder / "wnids.txt")
    label = {w: i for i, w in enumerate(wnids)}
    train_items = []
    for w in wnids:
        d = folder / "train" / w / "images"
        files = sorted(d.glob("*.JPEG"))
        if not files:
            raise DataError(f"missing the training images of class {w}: no *.JPEG in {d}; {_AGAIN}")
        train_items += [(p, label[w]) for p in files]
    val_items = _val_items(folder, label)
    return (*_decode(folder / "train", train_items), *_decode(folder / "val", val_items))
