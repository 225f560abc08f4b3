"""scikit-learn's bundled 8x8 handwritten digits: a benchmark that needs no files."""

from __future__ import annotations

from importlib import resources

import numpy as np

from cljax.benchmarks.data import record_read


def load(test_fraction: float = 0.2, seed: int = 0):
    """`(x_train, y_train, x_test, y_test)`: uint8 images (N, 8, 8) with values 0..16.

    The split is stratified and fixed by `seed` (1437 train, 360 test by default).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    bundled = resources.files("sklearn.datasets.data") / "digits.csv.gz"
    if bundled.is_file():  # the file scikit-learn read, for results' provenance
        record_read(bundled)
    x = digits.images.astype(np.uint8)
    y = digits.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return x_tr, y_tr, x_te, y_te
