import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax.core import buffer


def sequential_slots(num_seen, j, capacity):
    """Algorithm R item by item, given each item's random draw j."""
    slots = {}
    for i, draw in enumerate(j):
        n = num_seen + i
        slot = n if n < capacity else draw
        if slot < capacity:
            slots = {k: v for k, v in slots.items() if v != slot}
            slots[i] = slot
    return slots


@pytest.mark.parametrize("num_seen", [0, 3, 8, 40])
def test_reservoir_slots_match_sequential_loop(num_seen):
    capacity, batch = 8, 12
    key = jax.random.key(num_seen)
    got = np.asarray(buffer.reservoir_slots(jnp.int32(num_seen), batch, capacity, key))
    n = num_seen + np.arange(batch)
    j = np.asarray(jax.random.randint(key, (batch,), 0, jnp.asarray(n) + 1, dtype=jnp.int32))
    expected = sequential_slots(num_seen, j, capacity)
    for i in range(batch):
        assert got[i] == expected.get(i, capacity)


def test_reservoir_inclusion_probability_is_capacity_over_seen():
    capacity, stream, batch, trials = 10, 60, 6, 3000

    def one_trial(key):
        buf = buffer.init(capacity, {"id": jnp.int32(0)})
        for b in range(stream // batch):
            ids = jnp.arange(b * batch, (b + 1) * batch, dtype=jnp.int32)
            buf = buffer.add(buf, {"id": ids}, jax.random.fold_in(key, b))
        return buf.data["id"], buf.num_seen

    ids, seen = jax.jit(jax.vmap(one_trial))(jax.random.split(jax.random.key(0), trials))
    assert np.all(np.asarray(seen) == stream)
    counts = np.bincount(np.asarray(ids).ravel(), minlength=stream)
    freq = counts / trials
    # Each item is kept with probability capacity / num_seen = 1/6; binomial sd ~0.007.
    np.testing.assert_allclose(freq, capacity / stream, atol=0.035)
    # No duplicates inside one buffer.
    assert all(len(set(row.tolist())) == capacity for row in np.asarray(ids))


def test_fills_in_order_then_counts():
    buf = buffer.init(5, {"x": jnp.zeros(2), "y": jnp.int32(0)})
    buf = buffer.add(buf, {"x": jnp.ones((3, 2)), "y": jnp.arange(3)}, jax.random.key(1))
    assert int(buf.size) == 3 and int(buf.num_seen) == 3 and buf.capacity == 5
    np.testing.assert_array_equal(buf.data["y"][:3], [0, 1, 2])


def test_sample_without_replacement_and_uniform():
    buf = buffer.init(20, {"id": jnp.int32(0)})
    buf = buffer.add(buf, {"id": jnp.arange(100, 112)}, jax.random.key(0))  # 12 stored
    keys = jax.random.split(jax.random.key(1), 4000)
    items = jax.jit(jax.vmap(lambda k: buffer.sample(buf, k, 4)))(keys)["id"]
    items = np.asarray(items)
    assert all(len(set(r)) == 4 for r in items)
    assert set(np.unique(items)) == set(range(100, 112))
    freq = np.bincount(items.ravel() - 100) / items.size
    np.testing.assert_allclose(freq, 1 / 12, atol=0.01)


def test_sample_marks_repeats_invalid_when_underfilled():
    buf = buffer.init(10, {"id": jnp.int32(0)})
    idx, valid = buffer.sample_indices(buf, jax.random.key(0), 4)
    assert not np.asarray(valid).any()
    buf = buffer.add(buf, {"id": jnp.arange(3)}, jax.random.key(0))
    idx, valid = buffer.sample_indices(buf, jax.random.key(2), 5)
    assert np.asarray(valid).tolist() == [True, True, True, False, False]
    assert sorted(np.asarray(idx)[:3].tolist()) == [0, 1, 2]


def test_add_under_jit_scan_and_vmap_compiles_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def fill(keys):
        def one(key):
            buf = buffer.init(4, {"x": jnp.zeros(3)})

            def body(buf, i):
                return buffer.add(
                    buf, {"x": jnp.full((2, 3), i, jnp.float32)}, jax.random.fold_in(key, i)
                ), None

            buf, _ = jax.lax.scan(body, buf, jnp.arange(5))
            return buf

        return jax.vmap(one)(keys)

    bufs = fill(jax.random.split(jax.random.key(0), 3))
    bufs = fill(jax.random.split(jax.random.key(1), 3))
    assert bufs.data["x"].shape == (3, 4, 3)
    np.testing.assert_array_equal(bufs.num_seen, [10, 10, 10])


def test_bad_input_errors():
    with pytest.raises(ValueError, match="positive int"):
        buffer.init(0, {"x": jnp.zeros(2)})
    buf = buffer.init(3, {"x": jnp.zeros(2)})
    with pytest.raises(ValueError, match="does not match"):
        buffer.add(buf, {"x": jnp.zeros((2, 5))}, jax.random.key(0))


def test_fifo_keeps_exactly_the_last_capacity_items_in_ring_order():
    cap = 5
    buf = buffer.init(cap, {"v": jnp.zeros((), jnp.int32)})
    add = jax.jit(lambda b, items: buffer.add(b, items, None, policy="fifo"))
    offered = []
    for size in (3, 1, 4, 7, 2):  # one batch larger than the buffer
        items = jnp.arange(len(offered), len(offered) + size, dtype=jnp.int32) + 100
        buf = add(buf, {"v": items})
        offered += np.asarray(items).tolist()
        last = offered[-cap:]
        stored = np.asarray(buf.data["v"])[: int(buf.size)]
        assert sorted(stored.tolist()) == sorted(last)
        for n, value in enumerate(offered[-cap:], start=len(offered) - len(last)):
            assert stored[n % cap] == value  # item n sits in slot n % capacity
    assert int(buf.num_seen) == len(offered)
    with pytest.raises(ValueError, match="unknown buffer policy 'lifo'"):
        buffer.add(buf, {"v": jnp.zeros(1, jnp.int32)}, None, policy="lifo")
