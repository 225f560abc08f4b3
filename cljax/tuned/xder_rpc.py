"""Tuned settings of `xder_rpc` per (benchmark, buffer size): see cljax/tuned/__init__.py.

Seq-CIFAR-100 buffer 500: Mammoth HEAD's models/config/xder_rpc.yaml (the only tuning of this
variant; reproduce.json's target is 48.53); Seq-MNIST has no published tuning: the settings of
the run beside HEAD in experiments/results/reference_runs/mammoth_head_seqmnist_more.md
(`cljax.tuned.xder.head_variant`)."""

from cljax.tuned.xder import head_variant

TUNED = head_variant("xder_rpc", alpha=0.1, beta=0.5)
