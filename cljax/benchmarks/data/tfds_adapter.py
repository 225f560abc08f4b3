"""Any tensorflow-datasets image-classification dataset as numpy arrays (optional extra).

Uses `tfds.data_source` (ArrayRecord), which works without TensorFlow, with
`download=False` unless asked: offline, a missing dataset otherwise retries
its download for minutes.
"""

from __future__ import annotations

import numpy as np

from cljax.benchmarks.data import DataError, record_read


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError("tensorflow-datasets is not installed: pip install 'cljax[tfds]'") from e
    return tfds


def load(name: str, data_dir=None, download: bool = False, splits=("train", "test")):
    """Arrays `(x_train, y_train, x_test, y_test)` of tfds dataset `name` (uint8 images)."""
    tfds = _tfds()

    def missing(why):
        return DataError(
            f"tensorflow-datasets has no prepared {name!r} in {data_dir or 'its default dir'} "
            f"({why}); prepare it with internet access (--download)"
        )

    try:
        source = tfds.data_source(name, data_dir=data_dir, download=download)
    except Exception as e:  # tfds raises many types for a missing or unprepared dataset
        raise missing(type(e).__name__) from e
    out = []
    for split in splits:
        try:  # an unprepared dataset can come back as a source without splits
            records = source[split]
        except (KeyError, TypeError) as e:
            raise missing(f"no {split!r} split") from e
        for path in _files(records, split):  # provenance: the shard files of the split
            record_read(path)
        items = [records[i] for i in range(len(records))]
        out.append(np.stack([np.asarray(r["image"], np.uint8) for r in items]))
        out.append(np.asarray([r["label"] for r in items], np.int32))
    return tuple(out)


def _files(records, split) -> list[str]:
    """The files tfds reads `split` from (its ArrayRecord shards, whose paths hold the
    dataset's name and version), or [] when the source does not say."""
    info = getattr(records, "dataset_info", None)
    if info is None:  # older tfds: the source holds its builder
        info = getattr(getattr(records, "dataset_builder", None), "info", None)
    try:
        return [str(p) for p in info.splits[split].filepaths]
    except (AttributeError, KeyError, TypeError):
        return []
