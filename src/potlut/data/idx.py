"""MNIST-format (IDX) folders: MNIST, Fashion-MNIST, KMNIST and anything laid out alike.

A folder holds the four standard files, each optionally gzipped::

    train-images-idx3-ubyte  train-labels-idx1-ubyte
    t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte

IDX: 2 zero bytes, a type byte (0x08 = unsigned byte), a dimension count, then one
big-endian uint32 per dimension, then the data. Everything is checked before use.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from potlut.data.bundle import DataBundle, standardize
from potlut.errors import PotlutDataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_MAX_DIM = 1 << 28


def _find(folder: Path, stem: str) -> Path:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.is_file():
            return cand
    raise PotlutDataError(
        f"{folder}: missing {stem} (or {stem}.gz); an MNIST-format folder needs "
        f"{', '.join(FILES.values())}"
    )


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes with exactly ``ndim`` dimensions."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise PotlutDataError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise PotlutDataError(f"{path}: not an IDX file (bad magic)")
    if raw[2] != 0x08:
        raise PotlutDataError(f"{path}: IDX type 0x{raw[2]:02x} unsupported (need 0x08, ubyte)")
    if raw[3] != ndim:
        raise PotlutDataError(f"{path}: has {raw[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise PotlutDataError(f"{path}: truncated header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if any(d > _MAX_DIM for d in dims):
        raise PotlutDataError(f"{path}: implausible dimensions {dims}")
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != count:
        raise PotlutDataError(
            f"{path}: header says {dims} ({count} bytes) but {len(raw) - header} bytes follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_folder(folder: str | Path, name: str = "mnist") -> DataBundle:
    """An MNIST-format folder as a :class:`DataBundle` (1xHxW images, standardized)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PotlutDataError(f"{folder}: no such folder (expected the four MNIST IDX files)")
    arrays = {}
    for key, stem in FILES.items():
        arrays[key] = read_idx(_find(folder, stem), 3 if key.endswith("images") else 1)
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise PotlutDataError(f"{folder}: {split} has {n_img} images but {n_lab} labels")
        if n_img == 0:
            raise PotlutDataError(f"{folder}: {split} split is empty")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise PotlutDataError(f"{folder}: train and test images differ in size")
    labels = np.concatenate([arrays["train_labels"], arrays["test_labels"]])
    num_classes = int(labels.max()) + 1

    def to_x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32)[:, None] / 255.0)

    xtr, xte = standardize(to_x(arrays["train_images"]), to_x(arrays["test_images"]))
    h, w = arrays["train_images"].shape[1:]
    return DataBundle(
        name=name,
        train=TensorDataset(xtr, torch.from_numpy(arrays["train_labels"].astype(np.int64))),
        test=TensorDataset(xte, torch.from_numpy(arrays["test_labels"].astype(np.int64))),
        num_classes=max(num_classes, 2),
        in_shape=(1, int(h), int(w)),
    )


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzipped when the name ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
