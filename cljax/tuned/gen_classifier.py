"""Tuned settings of `gen_classifier` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Split MNIST: the authors' `compare.py` trains each class's VAE (85 units, 3 layers, z 5: this
method's defaults) for 2000 / 2 = 1000 iterations of 128 of that class at Adam 1e-3. Here a
step trains both classes of the task on their share of a batch of 256 (about 128 each)."""

from cljax.tuned import VDV_SPLIT_MNIST, row

TUNED = {
    "split-mnist": {
        None: row(
            VDV_SPLIT_MNIST + "; compare.py's generative classifier: 1000 iterations a class",
            lr=0.001,
            batch_size=256,
            steps=1000,
            last_batch="drop",
        ),
    },
}
