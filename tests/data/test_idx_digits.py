"""digits split and the MNIST (IDX) loader on fixtures written in the exact on-disk format."""

import gzip

import numpy as np
import pytest

from potlut.data import load
from potlut.data.idx import FILES, read_idx, write_idx
from potlut.errors import PotlutDataError


def test_digits_split_is_fixed_and_stratified():
    b = load("digits")
    assert b.in_shape == (1, 8, 8) and b.num_classes == 10
    assert len(b.train) == 1257 and len(b.test) == 540
    ytest = b.test.tensors[1]
    assert ytest.bincount().tolist() == [54, 55, 53, 55, 54, 55, 54, 54, 52, 54]  # 30% of each
    assert abs(float(b.train.tensors[0].mean())) < 1e-5  # standardized on train stats


def make_mnist(folder, n_train=12, n_test=7, size=28, gz=False):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    for key, stem in FILES.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_folder_shapes_and_labels(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    b = load(f"mnist:{tmp_path}")
    assert b.in_shape == (1, 28, 28) and b.num_classes == 10
    xtr, ytr = b.train.tensors
    xte, yte = b.test.tensors
    assert tuple(xtr.shape) == (12, 1, 28, 28) and tuple(xte.shape) == (7, 1, 28, 28)
    assert ytr.tolist() == arrays["train_labels"].tolist()
    assert yte.tolist() == arrays["test_labels"].tolist()
    # standardization keeps the pixel order: the brightest training pixel stays the brightest
    assert int(xtr.flatten().argmax()) == int(arrays["train_images"].flatten().argmax())


def test_idx_header_checks(tmp_path):
    p = tmp_path / "x"
    write_idx(p, np.zeros((3, 2, 2), np.uint8))
    assert read_idx(p, 3).shape == (3, 2, 2)
    raw = p.read_bytes()
    p.write_bytes(raw[:-1])
    with pytest.raises(PotlutDataError, match="bytes follow"):
        read_idx(p, 3)
    p.write_bytes(b"\x01" + raw[1:])
    with pytest.raises(PotlutDataError, match="bad magic"):
        read_idx(p, 3)
    p.write_bytes(raw[:2] + b"\x0d" + raw[3:])
    with pytest.raises(PotlutDataError, match="unsupported"):
        read_idx(p, 3)
    with pytest.raises(PotlutDataError, match="expected 1"):
        read_idx(tmp_path / "x", 1) if p.write_bytes(raw) else None
    g = tmp_path / "y.gz"
    g.write_bytes(gzip.compress(raw)[:10])
    with pytest.raises(PotlutDataError, match="cannot read"):
        read_idx(g, 3)


def test_missing_and_mismatched_files(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / FILES["test_labels"]).unlink()
    with pytest.raises(PotlutDataError, match="missing t10k-labels-idx1-ubyte"):
        load(f"mnist:{tmp_path}")
    write_idx(tmp_path / FILES["test_labels"], np.zeros(3, np.uint8))
    with pytest.raises(PotlutDataError, match="7 images but 3 labels"):
        load(f"mnist:{tmp_path}")
    with pytest.raises(PotlutDataError, match="needs a folder"):
        load("mnist")
