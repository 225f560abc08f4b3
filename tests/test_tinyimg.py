"""Seq-TinyImageNet (`seq-tinyimg`): the loader on a tiny fake `tiny-imagenet-200/` folder and
fake `.npy` files written here, the reference's class order and pixels, clear errors, the
scenario, ResNet-18 at 64x64 and one end-to-end CLI run."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from cljax import cli, models
from cljax.benchmarks import scenarios
from cljax.benchmarks.data import DataError, files_read, tinyimagenet

# Four of the official classes in wnids.txt's order, which is not their sorted order: a
# loader that sorted them (torchvision's ImageFolder) would swap labels 2 and 3.
CLASSES = tinyimagenet.WNIDS[:4]
TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 2


def level(label, k):
    """The grey level of image `k` of class `label`: a flat image survives JPEG coding."""
    return 40 * label + 10 * k + 20


def write_jpeg(path, value, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (64, 64, 3) if mode == "RGB" else (64, 64)
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(path, "JPEG", quality=95)


@pytest.fixture
def fake_folder(tmp_path):
    """`tmp_path/tiny-imagenet-200/`: 4 classes, 3 training and 2 validation images each; the
    validation annotations list the classes out of order; one training image is grey."""
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(CLASSES) + "\n")
    for label, wnid in enumerate(CLASSES):
        for k in range(TRAIN_PER_CLASS):
            mode = "L" if (label, k) == (1, 2) else "RGB"
            write_jpeg(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", level(label, k), mode)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")  # as the archive has
    lines, n = [], 0
    for label in (3, 0, 2, 1):
        for k in range(VAL_PER_CLASS):
            write_jpeg(root / "val" / "images" / f"val_{n}.JPEG", level(label, k))
            lines.append(f"val_{n}.JPEG\t{CLASSES[label]}\t0\t0\t63\t63")
            n += 1
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_folder_loads_in_the_reference_class_order(fake_folder):
    x_tr, y_tr, x_te, y_te = tinyimagenet.load(fake_folder)
    assert x_tr.shape == (12, 64, 64, 3) and x_te.shape == (8, 64, 64, 3)
    assert x_tr.dtype == x_te.dtype == np.uint8 and y_tr.dtype == y_te.dtype == np.int32
    # class i is line i of wnids.txt; each class's images in file-name order
    np.testing.assert_array_equal(y_tr, np.repeat(np.arange(4), TRAIN_PER_CLASS))
    want = [level(c, k) for c in range(4) for k in range(TRAIN_PER_CLASS)]
    assert np.abs(x_tr.reshape(12, -1).astype(int) - np.array(want)[:, None]).max() <= 2
    # the test set is the validation split, in the annotations' order
    np.testing.assert_array_equal(y_te, np.repeat([3, 0, 2, 1], VAL_PER_CLASS))
    want = [level(c, k) for c in (3, 0, 2, 1) for k in range(VAL_PER_CLASS)]
    assert np.abs(x_te.reshape(8, -1).astype(int) - np.array(want)[:, None]).max() <= 2
    grey = x_tr[TRAIN_PER_CLASS + 2]  # repeated to RGB
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    read = files_read()
    folder = fake_folder / "tiny-imagenet-200"
    for path in ("wnids.txt", "train", "val", "val/val_annotations.txt"):
        assert str((folder / path).resolve()) in read


def write_processed(root, per_chunk=1):
    """The DER framework's `.npy` layout, 20 chunks a split; images float32 in [0, 1]."""
    folder = root / "TINYIMG" / "processed"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for n in range(1, 21):
            x = rng.uniform(0, 1, (per_chunk, 64, 64, 3)).astype(np.float32)
            x[:, 0, 0, 0] = 0.999  # 254.745: the reference truncates to 254
            np.save(folder / f"x_{split}_{n:02d}.npy", x)
            np.save(folder / f"y_{split}_{n:02d}.npy", np.full(per_chunk, n - 1, np.int64))
    return folder


def test_processed_npy_read_as_the_reference_and_preferred(fake_folder):
    folder = write_processed(fake_folder)
    x_tr, y_tr, x_te, y_te = tinyimagenet.load(fake_folder)  # both present: the .npy files
    assert x_tr.shape == x_te.shape == (20, 64, 64, 3) and x_tr.dtype == np.uint8
    np.testing.assert_array_equal(y_tr, np.arange(20))  # chunks in number order
    assert y_te.dtype == np.int32 and (x_tr[:, 0, 0, 0] == 254).all()
    x = np.load(folder / "x_train_07.npy")[0]
    np.testing.assert_array_equal(x_tr[6], np.uint8(255 * x))  # Mammoth's __getitem__
    assert str(folder.resolve()) in files_read()
    np.save(folder / "y_val_03.npy", np.array([0.5]))
    with pytest.raises(DataError, match=r"corrupt file .*y_val_03.npy.*integer labels"):
        tinyimagenet.load(fake_folder)
    np.save(folder / "y_val_03.npy", np.array([2]))
    (folder / "x_val_20.npy").unlink()
    with pytest.raises(DataError, match=r"missing x_val_20.npy \(looked in .*processed\)"):
        tinyimagenet.load(fake_folder)


def test_missing_or_damaged_data_is_one_clear_line(fake_folder, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        tinyimagenet.load(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no Tiny ImageNet .*tiny-imagenet-200/ .*unzip http"):
        tinyimagenet.load(empty)
    with pytest.raises(DataError, match="cljax does not download it"):
        tinyimagenet.load(empty, download=True)
    root = fake_folder / "tiny-imagenet-200"
    bad = root / "val" / "images" / "val_5.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(DataError, match=r"corrupt image .*val_5.JPEG"):
        tinyimagenet.load(fake_folder)
    bad.unlink()
    with pytest.raises(DataError, match=r"missing val_5.JPEG \(looked in .*images\)"):
        tinyimagenet.load(fake_folder)
    with open(root / "val" / "val_annotations.txt", "a") as f:
        f.write("val_9.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations.txt, line 9: .*class of wnids.txt"):
        tinyimagenet.load(fake_folder)
    for f in (root / "train" / CLASSES[2] / "images").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=f"training images of class {CLASSES[2]}"):
        tinyimagenet.load(fake_folder)
    # the official 200 classes in another order would give other labels than the reference's
    (root / "wnids.txt").write_text("\n".join(sorted(tinyimagenet.WNIDS)))
    with pytest.raises(DataError, match="another order than the official file"):
        tinyimagenet.load(fake_folder)
    (root / "wnids.txt").unlink()
    with pytest.raises(DataError, match="missing wnids.txt"):
        tinyimagenet.load(fake_folder)


def test_scenario_splits_classes_and_normalises_as_the_reference(fake_folder):
    sc = scenarios.build("seq-tinyimg", fake_folder, num_tasks=2)
    assert (sc.num_classes, sc.num_tasks, sc.model) == (4, 2, "resnet18")
    assert sc.classes(1) == (2, 3) and sc.train_sizes == (6, 6)
    x, y = sc.test(1)
    assert len(x) == 4 and set(y) == {2, 3}
    mean, std = np.array(scenarios.TINYIMG_STATS[0]), np.array(scenarios.TINYIMG_STATS[1])
    np.testing.assert_allclose((mean, std), ((0.4802, 0.4480, 0.3975), (0.2770, 0.2691, 0.2821)))
    key = jax.random.key(0)
    plain = np.asarray(sc.input_fn(x, key, False))
    np.testing.assert_allclose(plain, (x / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    # training: a crop of the zero-padded (4) image and a flip, then the same normalisation
    aug = np.asarray(sc.input_fn(x, key, True))
    assert aug.shape == (4, 64, 64, 3) and not np.allclose(aug, plain)
    assert scenarios.build("seq-tinyimg", fake_folder, num_tasks=2, valid_fraction=0.5)
    with pytest.raises(ValueError, match="4 classes cannot be split into 10 equal tasks"):
        scenarios.build("seq-tinyimg", fake_folder)  # the reference's 10 tasks need 200
    with pytest.raises(ValueError, match="brightness"):
        scenarios.build("seq-tinyimg", fake_folder, brightness=0.5)


def test_resnet18_runs_on_64x64_into_200_classes():
    net = models.make("resnet18", 200, nf=4)
    x = np.zeros((2, 64, 64, 3), np.float32)
    variables = net.init(jax.random.key(0), x)
    assert net.apply(variables, x).shape == (2, 200)  # global average pool: any size


def test_cli_runs_seq_tinyimg_end_to_end(fake_folder, tmp_path):
    workdir = tmp_path / "run"
    args = ["--method", "sgd", "--benchmark", "seq-tinyimg", "--data-dir", str(fake_folder)]
    tiny = ["--tasks", "2", "--no-progress"]
    tiny += ["--set", "n_epochs=1", "--set", "batch_size=2", "--set", "model=cnn"]
    assert cli.main([*args, *tiny, "--workdir", str(workdir)]) == 0
    res = json.loads((workdir / "results.json").read_text())
    assert res["benchmark"] == "seq-tinyimg" and res["hparams"]["model"] == "cnn"
    assert len(res["accuracy"]["class-il"][0]) == 2
    assert any(f["path"].endswith("wnids.txt") for f in res["provenance"]["data_files"])
