"""Run by test_sharding.py in a fresh process with 8 fake CPU devices.

For each method given on the command line, 8 seeds: the run on one device and on
8 devices data-parallel (global batch fixed) must give the same accuracy
matrices, parameters and buffer contents (floats within tolerance); then the
seeds split over devices against the unsplit run: DER++ with 7 seeds padded to 8
on 4 seed devices, stopped and resumed padded to 9 on 3, and DGR padded on 4,
stopped and resumed (its frozen scholar restored under the padding). Exits
non-zero with the first difference.
"""

import os
import sys
import tempfile

flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
os.environ["XLA_FLAGS"] = " ".join([*flags, "--xla_force_host_platform_device_count=8"])

import jax  # noqa: E402
import numpy as np  # noqa: E402

from cljax import methods, models, train  # noqa: E402
from cljax.run import compiled, feed, sharding  # noqa: E402
from tests.conftest import tiny_scenario  # noqa: E402

SC = tiny_scenario(num_tasks=2, per_class=16)
HP = {"sgd": {}, "er": {"buffer_size": 12, "minibatch_size": 8}}
HP["derpp"] = {**HP["er"], "alpha": 0.5, "beta": 0.5}
HP["der"] = {**HP["er"], "alpha": 0.5}
HP["dgr"] = HP["mergan"] = {"n_critic": 2, "z_dim": 8}


def run(name, devices, seeds=(0, 1), seed_devices=1, **kw):
    method = methods.get(name).make(
        model=models.MLP((16,), SC.num_classes), input_fn=SC.input_fn, lr=0.05, **HP[name]
    )
    config = train.RunConfig(
        epochs=1,
        batch_size=16 if name in ("dgr", "mergan") else 8,
        seeds=tuple(seeds),
        progress=False,
        devices=devices,
        seed_devices=seed_devices,
        chunks_per_task=2,
    )
    return train.run(method, SC, config, **kw)


def assert_same(one, other, name, devices):
    """Equal accuracy matrices, integer leaves, float leaves within float tolerance (the
    seeds of `one` that `other` has), and `other`'s state over `devices` devices."""
    n = len(other["accuracy"]["class-il"])
    for setting, acc in other["accuracy"].items():
        assert one["accuracy"][setting][:n] == acc, (name, one["accuracy"], other["accuracy"])
    assert len(jax.tree.leaves(other["state"])[0].sharding.device_set) == devices
    for a, b in zip(jax.tree.leaves(one["state"]), jax.tree.leaves(other["state"]), strict=True):
        a, b = np.asarray(a)[: len(b)], np.asarray(b)
        if a.dtype.kind in "iu":
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)


def main(names):
    assert jax.device_count() == 8, jax.devices()
    whole = {}
    for name in names:  # 8 seeds on one device: the reference of both splits
        whole[name] = run(name, 1, seeds=range(8))
        assert_same(whole[name], run(name, 8, seeds=range(8)), name, 8)
        print(f"{name}: 1 device == 8 devices", flush=True)
    # The seeds split over devices, each method's run against its unsplit one: 7 seeds
    # padded to 8 on 4 seed devices, stopped after task 1; resumed padded to 9 on 3
    with tempfile.TemporaryDirectory() as tmp:
        run("derpp", 4, seeds=range(7), seed_devices=4, workdir=tmp, stop_after=0)
        resumed = run("derpp", 3, seeds=range(7), seed_devices=3, workdir=tmp, resume=True)
    assert resumed["seeds"] == list(range(7))
    unsplit = whole["derpp"] if "derpp" in whole else run("derpp", 1, seeds=range(8))
    assert_same(unsplit, resumed, "derpp", 3)
    print("derpp: 7 seeds padded on 4 devices, resumed on 3 == unsplit", flush=True)
    if "dgr" in whole:  # a begin_task (the frozen scholar) restored under the padding
        with tempfile.TemporaryDirectory() as tmp:
            run("dgr", 4, seeds=range(7), seed_devices=4, workdir=tmp, stop_after=0)
            resumed = run("dgr", 4, seeds=range(7), seed_devices=4, workdir=tmp, resume=True)
        assert_same(whole["dgr"], resumed, "dgr", 4)
        print("dgr: 7 seeds padded on 4 devices, resumed == unsplit", flush=True)
    # The step really is partitioned: gradients are summed across devices.
    method = methods.get("derpp").make(
        model=models.MLP((16,), SC.num_classes), input_fn=SC.input_fn, **HP["derpp"]
    )
    mesh = sharding.make_mesh(8)
    keys = jax.vmap(jax.random.key)(np.arange(2, dtype=np.uint32))
    state = jax.vmap(method.init, in_axes=(0, None))(keys, SC.train(0)[0][:1])
    x, y = SC.train(0)
    chunk = (np.zeros((2, 3, 8), np.int32), np.int32(0), np.ones(3, bool))
    args = sharding.replicate((state, keys, x, y, None, *chunk), mesh)
    runner = compiled.make_task_runner(method, feed.SharedFeed, mesh)  # shared arrays
    hlo = runner.lower(*args).compile().as_text()
    assert "all-reduce" in hlo
    print("derpp step has all-reduce", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
