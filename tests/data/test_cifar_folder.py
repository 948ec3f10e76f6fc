"""CIFAR pickle folders and image folders: shapes, labels, counts, bad input, augmentation."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from potlut import data
from potlut.data.cifar import read_pickle
from potlut.errors import PotlutDataError
from tests.data.fixtures import (
    write_cifar10,
    write_cifar100,
    write_folder,
    write_rafdb_original,
)


def test_cifar10_shapes_labels_counts(tmp_path):
    folder = write_cifar10(tmp_path)
    b = data.load(f"cifar10:{folder}")
    assert (b.name, b.num_classes, b.in_shape) == ("cifar10", 10, (3, 32, 32))
    assert (len(b.train), len(b.test)) == (100, 10)
    x, y = b.test[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    raw = read_pickle(folder / "test_batch")
    assert int(y) == raw[b"labels"][3]
    # test images are the raw pixels, channel-planar, normalized with train statistics
    img = torch.from_numpy(raw[b"data"][3].reshape(3, 32, 32).astype(np.float32) / 255)
    train = np.concatenate([read_pickle(folder / f"data_batch_{i}")[b"data"] for i in range(1, 6)])
    mean = train.reshape(-1, 3, 1024).astype(np.float64).mean((0, 2)) / 255
    std = (train.reshape(-1, 3, 1024).astype(np.float64) / 255).std((0, 2))
    expect = (img - torch.tensor(mean, dtype=torch.float32)[:, None, None]) / torch.tensor(
        std, dtype=torch.float32)[:, None, None]
    assert torch.allclose(x, expect, atol=1e-5)
    labels = [int(b.train[i][1]) for i in range(len(b.train))]
    expect_labels = sum((read_pickle(folder / f"data_batch_{i}")[b"labels"] for i in range(1, 6)),
                        [])
    assert labels == expect_labels


def test_cifar100_fine_and_coarse(tmp_path):
    folder = write_cifar100(tmp_path)
    fine = data.load(f"cifar100:{folder}")
    coarse = data.load(f"cifar100:{folder}?labels=coarse")
    assert (fine.num_classes, coarse.num_classes) == (100, 20)
    assert (len(fine.train), len(fine.test)) == (40, 12)
    assert coarse.name == "cifar100-coarse"
    for i in range(12):
        assert int(coarse.test[i][1]) == int(fine.test[i][1]) // 5


def test_cifar_bad_input_is_one_line_error(tmp_path):
    with pytest.raises(PotlutDataError, match="no such folder"):
        data.load(f"cifar10:{tmp_path / 'nope'}")
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(PotlutDataError, match="missing data_batch_3") as err:
        data.load(f"cifar10:{folder}")
    assert "\n" not in str(err.value)
    (folder / "data_batch_3").write_bytes(b"\x80\x03garbage")
    with pytest.raises(PotlutDataError, match="not a CIFAR python pickle"):
        data.load(f"cifar10:{folder}")
    pickle_bad = {b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}
    (folder / "data_batch_3").write_bytes(pickle.dumps(pickle_bad, protocol=3))
    with pytest.raises(PotlutDataError, match=r"uint8 N x 3072, got uint8 \(4, 100\)"):
        data.load(f"cifar10:{folder}")
    good = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(good, protocol=3))
    with pytest.raises(PotlutDataError, match=r"labels in b'labels' must lie in 0..9"):
        data.load(f"cifar10:{folder}")
    with pytest.raises(PotlutDataError, match="unknown data option 'colour'"):
        data.load(f"cifar10:{folder}?colour=1")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_pickle_refuses_foreign_globals(tmp_path, capsys):
    folder = write_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=3))
    with pytest.raises(PotlutDataError, match="refusing to load builtins.print"):
        data.load(f"cifar10:{folder}")
    assert "pwned" not in capsys.readouterr().out


def test_cifar_files_use_original_numpy_module_path(tmp_path):
    folder = write_cifar10(tmp_path)
    raw = (folder / "data_batch_1").read_bytes()
    assert b"numpy.core.multiarray\n_reconstruct" in raw and b"numpy._core" not in raw


def test_cifar_augmentation_deterministic_and_changes_with_epoch(tmp_path):
    b = data.load(f"cifar10:{write_cifar10(tmp_path)}")
    b.train.set_epoch(7)
    first = torch.stack([b.train[i][0] for i in range(20)])
    again = torch.stack([b.train[i][0] for i in range(20)])
    assert torch.equal(first, again)
    b.train.set_epoch(8)
    other = torch.stack([b.train[i][0] for i in range(20)])
    assert not torch.equal(first, other)
    # workers give exactly the same samples as the main process
    b.train.set_epoch(7)
    loaded = torch.cat([x for x, _ in DataLoader(b.train, batch_size=5, num_workers=2)])
    assert torch.equal(loaded[:20], first)
    # no-augment option: train samples equal the evaluation transform
    plain = data.load(f"cifar10:{tmp_path / 'cifar-10-batches-py'}?augment=0")
    assert torch.equal(plain.train[0][0], plain.train[0][0])
    assert not plain.train.transform.random


def test_image_folder_shapes_labels_counts(tmp_path):
    root = write_folder(tmp_path / "imgs")
    b = data.load(f"folder:{root}?size=32")
    assert (b.num_classes, b.in_shape) == (3, (3, 32, 32))
    assert (len(b.train), len(b.test)) == (9, 6)
    assert [int(b.train[i][1]) for i in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [int(b.test[i][1]) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    x, _ = b.train[4]
    assert x.shape == (3, 32, 32) and torch.isfinite(x).all()
    assert torch.equal(b.test[1][0], b.test[1][0])


def test_image_folder_bad_input(tmp_path):
    with pytest.raises(PotlutDataError, match="expected train/<class>"):
        data.load(f"folder:{tmp_path}")
    root = write_folder(tmp_path / "a", val_name="elsewhere")
    with pytest.raises(PotlutDataError, match="no val/"):
        data.load(f"folder:{root}")
    root = write_folder(tmp_path / "b")
    (root / "val" / "zebra").mkdir()
    (root / "val" / "zebra" / "z.png").write_bytes(b"")
    with pytest.raises(PotlutDataError, match=r"classes \['zebra'\] are not in train/"):
        data.load(f"folder:{root}")
    root = write_folder(tmp_path / "c")
    for f in sorted((root / "train" / "cat").iterdir()):
        f.write_bytes(b"not an image")
    with pytest.raises(PotlutDataError, match="not a readable PNG/JPEG image"):
        data.load(f"folder:{root}")


def test_rafdb_original_layout_and_class_folders(tmp_path):
    b = data.load(f"rafdb:{write_rafdb_original(tmp_path / 'raf')}?size=48")
    assert (b.name, b.num_classes, b.in_shape) == ("rafdb", 7, (3, 48, 48))
    assert (len(b.train), len(b.test)) == (14, 7)
    assert [int(b.test[i][1]) for i in range(7)] == list(range(7))
    classes = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    folders = write_folder(tmp_path / "rf", classes=classes, per_class=(1, 1), val_name="test")
    assert data.load(f"rafdb:{folders}").num_classes == 7
    bad = write_folder(tmp_path / "r3", classes=classes[:3])
    with pytest.raises(PotlutDataError, match="rafdb has 7 classes, found 3"):
        data.load(f"rafdb:{bad}")
    lab = tmp_path / "raf" / "EmoLabel" / "list_patition_label.txt"
    lab.write_text("train_00001.jpg 9\n")
    with pytest.raises(PotlutDataError, match=r"list_patition_label.txt:1: expected"):
        data.load(f"rafdb:{tmp_path / 'raf'}")


def test_imagenet_train_augmentation_is_random_resized_crop(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=(2, 1), size=(60, 90))
    b = data.load(f"folder:{root}?size=24")
    b.train.set_epoch(1)
    a = torch.stack([b.train[i][0] for i in range(6)])
    b.train.set_epoch(2)
    c = torch.stack([b.train[i][0] for i in range(6)])
    assert a.shape == (6, 3, 24, 24) and not torch.equal(a, c)


def test_cifar10_subset_folder_and_its_parent_load(tmp_path):
    """data_batch_1..k with k < 5 (the shared sample has 4); the parent folder works too."""
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_5").unlink()
    (folder / "data_batch_4").unlink()
    for path in (folder, tmp_path):
        b = data.load(f"cifar10:{path}")
        assert (len(b.train), len(b.test)) == (60, 10)
    (folder / "data_batch_2").unlink()
    with pytest.raises(PotlutDataError, match="missing data_batch_2"):
        data.load(f"cifar10:{folder}")
