"""Task programs kept on disk by a run's `program_key` (`cljax.run.program_store`): a second
run loads them without tracing and ends bit for bit where the first did; another key, a torn
file or a program placed otherwise is compiled again; the `cljax` command's key follows what
changes a program and nothing else."""

import argparse
import uuid

import jax
import numpy as np
import pytest

from cljax import cli, methods, models, train
from cljax.run import program_store

HP = {"buffer_size": 12, "minibatch_size": 4, "alpha": 0.3, "beta": 0.5}


def run(tiny, key, seeds=(0, 1)):
    method = methods.get("derpp").make(
        model=models.MLP((16,), tiny.num_classes), input_fn=tiny.input_fn, lr=0.05, **HP
    )
    config = train.RunConfig(
        batch_size=5, seeds=seeds, progress=False, chunks_per_task=2, program_key=key
    )
    return train.run(method, tiny, config)


@pytest.fixture
def loads(monkeypatch):
    """The programs each `ProgramStore.load` returned (None: not there or not usable)."""
    got = []
    load = program_store.ProgramStore.load

    def spy(self, name, args):
        got.append(load(self, name, args))
        return got[-1]

    monkeypatch.setattr(program_store.ProgramStore, "load", spy)
    return got


def same(a, b):
    assert a["accuracy"] == b["accuracy"] and a["final_train_loss"] == b["final_train_loss"]
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_second_run_loads_its_programs_and_ends_bit_for_bit_as_the_first(tiny, loads):
    key = f"test-{uuid.uuid4()}"
    plain = run(tiny, None)
    assert loads == []  # no key: no store
    first = run(tiny, key)
    assert loads and all(p is None for p in loads)  # nothing stored yet: compiled, stored
    stored = len(loads)
    second = run(tiny, key)
    assert len(loads) == 2 * stored and all(p is not None for p in loads[stored:])
    same(first, plain)
    same(second, plain)
    loads.clear()
    run(tiny, f"{key}-other")  # another key: compiled again
    assert loads and all(p is None for p in loads)


def test_a_torn_file_or_other_shapes_are_compiled_again(tiny, loads):
    key = f"test-{uuid.uuid4()}"
    run(tiny, key)
    folder = program_store.open_store(key).folder
    before = set(folder.glob(f"*{program_store.SUFFIX}"))
    loads.clear()
    run(tiny, key, seeds=(0, 1, 2))  # other shapes: other programs
    assert all(p is None for p in loads)
    mine = set(folder.glob(f"*{program_store.SUFFIX}")) - before
    for path in mine:
        path.write_bytes(b"torn")
    loads.clear()
    again = run(tiny, key, seeds=(0, 1, 2))
    assert loads and all(p is None for p in loads)
    loads.clear()
    assert run(tiny, key, seeds=(0, 1, 2))["accuracy"] == again["accuracy"]
    assert all(p is not None for p in loads)  # the torn files were replaced


def test_the_folder_is_kept_under_its_size_oldest_first(tmp_path):
    import os

    for i in range(4):
        path = tmp_path / f"{i}{program_store.SUFFIX}"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + i, 1000 + i))
    program_store.trim(tmp_path, max_bytes=250)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{i}{program_store.SUFFIX}" for i in (2, 3)
    ]


def test_the_commands_key_follows_what_changes_a_program():
    settings = argparse.Namespace(config="Config(lr=0.1)", run="Run(batch_size=10)")
    config = train.RunConfig(seeds=(0, 1))

    def key(*argv, settings=settings, config=config):
        return cli.program_key(cli.parse_args(list(argv)), settings, config)

    base = key("--method", "derpp", "--workdir", "a")
    assert key("--method", "derpp", "--workdir", "b", "--overwrite", "--no-progress") == base
    assert key("--method", "derpp", "--workdir", "a", "--log", "csv") == base
    assert key("--method", "derpp", "--set", "lr=0.2") != base
    assert key("--method", "er") != base
    other = argparse.Namespace(config="Config(lr=0.2)", run="Run(batch_size=10)")
    assert key("--method", "derpp", "--workdir", "a", settings=other) != base
    more = train.RunConfig(seeds=(0, 1, 2))
    assert key("--method", "derpp", "--workdir", "a", config=more) != base
    assert key("--method", "derpp", "--import", "mymodule") is None  # code the key cannot see


def test_programs_that_need_their_process_are_not_stored():
    """A LAPACK call (GEM's QP) loaded in a fresh process crashed it: only programs whose custom
    calls are XLA's own (`lax.top_k`) are stored."""
    x = jax.numpy.eye(3) + 1.0
    solve = jax.jit(lambda a: jax.numpy.linalg.solve(a, a[0])).lower(x).compile()
    top = jax.jit(lambda a: jax.lax.top_k(a[0], 2)[1]).lower(x).compile()
    assert not program_store._self_contained(solve)
    assert program_store._self_contained(top)
