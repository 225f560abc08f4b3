import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cljax.benchmarks import scenarios
from tests.conftest import tiny_scenario


def test_seq_digits_splits_classes_in_order():
    sc = scenarios.build("seq-digits")
    assert sc.num_tasks == 5 and sc.settings == ("class-il", "task-il")
    for t in range(5):
        x, y = sc.train(t)
        assert set(np.unique(y)) == set(sc.classes(t)) == {2 * t, 2 * t + 1}
        assert len(y) == sc.train_sizes[t]
    assert sum(sc.train_sizes) == 1437


def test_seq_mnist_ten_tasks(mnist_dir):
    sc = scenarios.build("seq-mnist", mnist_dir, num_tasks=10)
    assert sc.num_tasks == 10 and sc.classes(3) == (3,)
    assert sc.train_sizes[0] == 5923


def test_bad_task_count_and_name():
    with pytest.raises(ValueError, match="cannot be split into 3"):
        scenarios.build("seq-digits", num_tasks=3)
    with pytest.raises(ValueError, match="unknown benchmark 'seq-foo'"):
        scenarios.build("seq-foo")


def test_a_larger_first_task_and_equal_steps_after_it():
    sc = scenarios.build("seq-digits", num_tasks=4, base_classes=4)
    assert sc.name == "seq-digits-b4" and sc.num_tasks == 4
    assert [sc.classes(t) for t in range(4)] == [(0, 1, 2, 3), (4, 5), (6, 7), (8, 9)]
    for t in range(4):
        for x, y in (sc.train(t), sc.test(t)):
            assert set(np.unique(y)) == set(sc.classes(t)) and len(x) == len(y)
        assert sc.train_sizes[t] == len(sc.train(t)[1])
    assert sum(sc.train_sizes) == 1437
    with pytest.raises(ValueError, match="leaves 6 of 10 classes, which cannot be split into 4"):
        scenarios.build("seq-digits", num_tasks=5, base_classes=4)
    with pytest.raises(ValueError, match="choose 1 to 9"):
        scenarios.build("seq-digits", num_tasks=2, base_classes=10)


def synthetic_cifar(n_classes, per_class=2):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), per_class).astype(np.int32)
    x = rng.integers(0, 255, (len(y), 32, 32, 3), dtype=np.uint8)
    return x, y, x[:n_classes], y[:n_classes]


@pytest.mark.parametrize("classes,tasks", [(10, 5), (100, 10)])
def test_cifar_scenarios_on_synthetic_arrays(classes, tasks):
    sc = scenarios.class_incremental(
        "seq-cifar",
        synthetic_cifar(classes),
        tasks,
        scenarios.cifar_input(*scenarios.CIFAR10_STATS),
        "resnet18",
    )
    x, y = sc.train(tasks - 1)
    assert x.shape[1:] == (32, 32, 3) and len(sc.classes(0)) == classes // tasks
    out = sc.input_fn(jnp.asarray(x), jax.random.key(0), True)
    assert out.shape == x.shape and out.dtype == jnp.float32
    test_out = sc.input_fn(jnp.asarray(x), None, False)
    ref = (x / 255.0 - np.array(scenarios.CIFAR10_STATS[0])) / np.array(scenarios.CIFAR10_STATS[1])
    np.testing.assert_allclose(test_out, ref, rtol=1e-5, atol=1e-5)


def test_crop_and_flip_move_pixels_but_keep_content():
    fn = scenarios.cifar_input((0, 0, 0), (1, 1, 1))
    x = jnp.arange(32 * 32 * 3, dtype=jnp.uint8).reshape(1, 32, 32, 3).repeat(8, 0)
    out = np.asarray(fn(x, jax.random.key(3), True))
    assert not all(np.array_equal(out[0], o) for o in out[1:])  # per-sample randomness
    # A crop of the zero-padded image: the centre 24x24 comes from the original.
    centre = out[0][4:28, 4:28]
    orig = np.asarray(x[0], float) / 255
    found = any(
        np.allclose(centre, img[4 + dy : 28 + dy, 4 + dx : 28 + dx])
        for img in (orig, orig[:, ::-1])
        for dy in range(-4, 5)
        for dx in range(-4, 5)
    )
    assert found


def test_brightness_jitter_scales_each_image_after_crop_and_flip():
    """torchvision's ColorJitter(brightness=b): one factor per image in [1 - b, 1 + b]; the
    crop and flip are those of the run without jitter (same key)."""
    x = jnp.full((16, 32, 32, 3), 100, jnp.uint8)
    plain = np.asarray(scenarios.cifar_input((0, 0, 0), (1, 1, 1))(x, jax.random.key(0), True))
    b = 63 / 255
    fn = scenarios.cifar_input((0, 0, 0), (1, 1, 1), brightness=b)
    jittered = np.asarray(fn(x, jax.random.key(0), True))
    lit = plain > 0  # the zero padding stays 0
    ratio = jittered[lit] / plain[lit]
    factors = [np.unique(np.round(jittered[i][lit[i]] / plain[i][lit[i]], 5)) for i in range(16)]
    assert all(len(f) == 1 for f in factors)  # one factor per image
    assert ratio.min() >= 1 - b - 1e-6 and ratio.max() <= 1 + b + 1e-6
    assert len({float(f[0]) for f in factors}) == 16
    np.testing.assert_array_equal(jittered[~lit], 0)
    unaugmented = fn(x, None, False)
    np.testing.assert_allclose(unaugmented, np.full(x.shape, 100 / 255), rtol=1e-6)


def test_fixed_class_order_relabels_classes_into_tasks():
    """Class ORDER[i] becomes label i (the official code's `_map_new_class_index`)."""
    order = scenarios.CLASS_ORDERS["der"]["seq-cifar10"]
    arrays = scenarios.reorder_classes(synthetic_cifar(10), order)
    sc = scenarios.class_incremental("seq-cifar10", arrays, 5, scenarios.scaled_input(255.0), "mlp")
    x0, y0 = sc.train(0)
    original = synthetic_cifar(10)
    for label, cls in ((0, 4), (1, 0)):  # task 0 holds the original classes 4 and 0
        np.testing.assert_array_equal(x0[y0 == label], original[0][original[1] == cls])
    for table in scenarios.CLASS_ORDERS["der"].values():
        assert sorted(table) == list(range(len(table)))
    with pytest.raises(ValueError, match="class order 'der' is not defined for seq-mnist"):
        scenarios.build("seq-mnist", class_order="der")
    with pytest.raises(ValueError, match="brightness jitter is a CIFAR augmentation"):
        scenarios.build("seq-mnist", brightness=0.2)


def test_seeded_class_order_is_van_de_vens_permutation():
    """Seed N's class order as GMvandeVen/continual-learning draws it (`np.random.seed(N)`,
    then `np.random.permutation(list(range(10)))`: class y becomes label p[y]); its seed 0
    keeps label order. The permutation for seed 1 is p = [2 9 6 4 0 3 1 7 8 5]."""
    assert scenarios.seeded_class_order(10, 0) == tuple(range(10))
    order = scenarios.seeded_class_order(10, 1)
    p = [2, 9, 6, 4, 0, 3, 1, 7, 8, 5]
    assert [p[c] for c in order] == list(range(10))  # order[i] is the class labelled i
    with pytest.raises(ValueError, match="class_seed shuffles"):
        scenarios.build("perm-mnist", class_seed=1)


def test_split_mnist_is_shuffled_per_class_seed(mnist_dir):
    plain = scenarios.build("split-mnist", mnist_dir)
    assert plain.model == "mlp-400" and plain.num_tasks == 5
    shuffled = scenarios.build("split-mnist", mnist_dir, class_seed=1)
    x, y = shuffled.train(0)  # the classes p maps to 0 and 1: 4 and 6
    x4, y4 = plain.train(2)
    np.testing.assert_array_equal(x[y == 0], x4[y4 == 4])
    sizes = {c: int((plain.train(c // 2)[1] == c).sum()) for c in range(10)}
    assert shuffled.train_sizes[0] == sizes[4] + sizes[6]


def test_within_task_labels_is_the_domain_scenario_of_a_class_split():
    sc = tiny_scenario(num_tasks=2)
    dom = scenarios.within_task_labels(sc, "tiny-domain")
    assert dom.settings == ("domain-il",) and dom.num_classes == 2 and dom.single_setting
    for t in range(2):
        x, y = dom.train(t)
        x0, y0 = sc.train(t)
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0 - 2 * t)
        assert dom.classes(t) == (0, 1) and set(dom.test(t)[1]) == {0, 1}
    with pytest.raises(ValueError, match="equally many classes"):
        scenarios.within_task_labels(tiny_scenario(num_tasks=3, base_classes=2), "x")


def test_split_mnist_domain(mnist_dir):
    dom = scenarios.build("split-mnist-domain", mnist_dir, class_seed=2)
    cls = scenarios.build("split-mnist", mnist_dir, class_seed=2)
    assert dom.train_sizes == cls.train_sizes and dom.num_classes == 2
    np.testing.assert_array_equal(dom.train(3)[1], cls.train(3)[1] - 6)


def test_van_de_vens_permutations_per_seed():
    """permMNIST's pixel permutations as that code draws them: `np.random.seed(s)` then one
    `np.random.permutation(1024)` per context (seed 0: the first context unpermuted)."""
    src, keep = scenarios.vdv_permutation_maps(3, 4, 1024)
    rng = np.random.RandomState(3)
    for t in range(4):
        np.testing.assert_array_equal(src[t], rng.permutation(1024))
    assert keep.all()
    src0, _ = scenarios.vdv_permutation_maps(0, 2, 1024)
    np.testing.assert_array_equal(src0[0], np.arange(1024))
    np.testing.assert_array_equal(src0[1], np.random.RandomState(0).permutation(1024))


def test_permuted_mnist_is_padded_and_permuted_per_run_seed(mnist_dir):
    sc = scenarios.build("permuted-mnist", mnist_dir)
    assert sc.num_tasks == 10 and sc.settings == ("domain-il",) and sc.model == "mlp-1000"
    x0, _ = sc.raw("train")
    assert x0.shape[1:] == (32, 32) and not x0[:, :2].any()  # Pad(2): a blank border
    src, keep = sc.seed_maps(1)
    np.testing.assert_array_equal(src, scenarios.vdv_permutation_maps(1, 10, 1024)[0])


def test_permutation_and_rotation_transforms():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (3, 28, 28)).astype(np.uint8)
    perm = scenarios.permutation(np.random.default_rng(1), (28, 28))
    px = perm(x)
    assert sorted(px[0].ravel().tolist()) == sorted(x[0].ravel().tolist())
    assert not np.array_equal(px, x)
    np.testing.assert_array_equal(scenarios.rotation(0.0, (28, 28))(x), x)
    np.testing.assert_array_equal(scenarios.rotation(90.0, (28, 28))(x), np.rot90(x, 1, (1, 2)))


def test_perm_and_rot_mnist_are_domain_il(mnist_dir):
    for name in ("perm-mnist", "rot-mnist"):
        sc = scenarios.build(name, mnist_dir, num_tasks=3)
        assert sc.settings == ("domain-il",) and sc.num_tasks == 3
        x0, y0 = sc.test(0)
        x1, y1 = sc.test(1)
        np.testing.assert_array_equal(y0, y1)
        assert not np.array_equal(x0, x1)
        assert sc.classes(2) == tuple(range(10))


def test_validation_split_holds_out_a_fraction_the_training_no_longer_sees():
    sc = tiny_scenario(num_tasks=2, per_class=10)
    reduced, valid = scenarios.split_validation(sc, 0.15)
    for t in range(sc.num_tasks):
        x, y = sc.train(t)
        (xr, yr), (xv, yv) = reduced.train(t), valid(t)
        assert len(yv) == int(0.15 * len(y)) and len(yr) + len(yv) == len(y)
        assert reduced.train_sizes[t] == len(yr)
        # disjoint, and together exactly the task's training data
        rows = lambda a, b: sorted(
            map(bytes, np.concatenate([a.reshape(len(a), -1), b[:, None]], 1))
        )
        assert rows(np.concatenate([xr, xv]), np.concatenate([yr, yv])) == rows(x, y)
        np.testing.assert_array_equal(valid(t)[0], xv)  # the same split every call
    assert reduced.test(0)[1].tolist() == sc.test(0)[1].tolist()
    with pytest.raises(ValueError, match="fraction"):
        scenarios.split_validation(sc, 1.0)


def test_held_out_takes_a_fraction_of_each_class_and_build_scores_on_it():
    x = np.arange(60, dtype=np.uint8).reshape(60, 1, 1)
    y = np.repeat(np.arange(3), 20).astype(np.int32)
    xk, yk, xv, yv = scenarios.held_out((x, y, x[:5], y[:5]), 0.25)
    assert np.bincount(yv).tolist() == [5, 5, 5] and np.bincount(yk).tolist() == [15, 15, 15]
    assert sorted(np.concatenate([xk, xv]).ravel().tolist()) == list(range(60))  # a partition
    assert yv.tolist() == [int(v) // 20 for v in xv.ravel()]  # each image keeps its label
    again = scenarios.held_out((x, y, x[:5], y[:5]), 0.25)
    np.testing.assert_array_equal(again[2], xv)  # the same split every call
    with pytest.raises(ValueError, match="fraction"):
        scenarios.held_out((x, y), 1.0)
    # a benchmark built on it trains on the rest and is scored on the held-out images
    full, valid = scenarios.build("seq-digits"), scenarios.build("seq-digits", valid_fraction=0.1)
    n_train = sum(full.train_sizes)
    assert sum(valid.train_sizes) + sum(len(valid.test(t)[1]) for t in range(5)) == n_train
    with pytest.raises(ValueError, match="fraction"):
        scenarios.build("seq-digits", valid_fraction=1.5)
