"""Tuned settings of `joint`: SGD's rows (the DER paper does not list JOINT's settings)."""

from cljax.tuned import OURS_JOINT, same_as, sgd

TUNED = {benchmark: same_as(rows, OURS_JOINT) for benchmark, rows in sgd.TUNED.items()}
