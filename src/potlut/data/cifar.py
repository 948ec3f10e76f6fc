"""CIFAR-10 / CIFAR-100 from the original python-pickle folders (no downloads).

``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` (a subset folder may stop
early: ``data_batch_1`` .. ``data_batch_k``, as in ../shared/data), ``test_batch``,
``batches.meta``; ``cifar-100-python/``: ``train``, ``test``, ``meta``. Each batch is a
pickled dict with ``b'data'`` (uint8, N x 3072, the 1024 red, then green, then blue
pixels of each 32x32 image row-major) and ``b'labels'`` (CIFAR-10) or ``b'fine_labels'``
and ``b'coarse_labels'`` (CIFAR-100).

The format is pickle, which can run code; these files are read with an unpickler that
resolves exactly the globals a numpy array needs (``_reconstruct``, ``ndarray``,
``dtype``) and refuses everything else, so a tampered file is an error, not an exploit.
Normalization uses the training split's per-channel statistics, as the other loaders do.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from potlut.data.bundle import DataBundle
from potlut.data.transforms import AugmentedImages, CifarTrain, EvalTransform, parse_options
from potlut.errors import PotlutDataError

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
CIFAR10_REQUIRED = ["data_batch_1", "test_batch", "batches.meta"]
CIFAR100_FILES = ["train", "test", "meta"]
PIXELS = 3 * 32 * 32


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals of a pickled numpy array; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray",
                                                 "numpy._core.multiarray"):
            return _np_reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle(path: Path) -> dict:
    """One CIFAR pickle file as a dict with bytes keys (restricted unpickler)."""
    if not path.is_file():
        raise PotlutDataError(f"{path}: missing file")
    try:
        obj = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            pickle.UnpicklingError) as exc:
        raise PotlutDataError(f"{path}: not a CIFAR python pickle ({exc})") from None
    if not isinstance(obj, dict):
        raise PotlutDataError(f"{path}: not a CIFAR python pickle (holds {type(obj).__name__})")
    return obj


def _images(path: Path, d: dict) -> np.ndarray:
    data = d.get(b"data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != PIXELS:
        got = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise PotlutDataError(f"{path}: b'data' must be uint8 N x {PIXELS}, got {got}")
    return data.reshape(-1, 3, 32, 32)


def _labels(path: Path, d: dict, key: bytes, n: int, num_classes: int) -> np.ndarray:
    raw = d.get(key)
    if raw is None:
        raise PotlutDataError(f"{path}: no {key!r} entry (keys: {sorted(d)})")
    try:
        labels = np.asarray(raw, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise PotlutDataError(f"{path}: {key!r} is not a list of integers") from None
    if len(labels) != n:
        raise PotlutDataError(f"{path}: {n} images but {len(labels)} labels in {key!r}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise PotlutDataError(
            f"{path}: labels in {key!r} must lie in 0..{num_classes - 1}, "
            f"found {labels.min()}..{labels.max()}"
        )
    return labels


def _names(path: Path, d: dict, key: bytes, count: int) -> list[str]:
    names = d.get(key)
    if not isinstance(names, list) or len(names) != count:
        raise PotlutDataError(f"{path}: {key!r} must list {count} class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _folder(path: str, expected: list[str], what: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise PotlutDataError(f"{folder}: no such folder (expected {what}: {', '.join(expected)})")
    missing = [f for f in expected if not (folder / f).is_file()]
    if missing:
        raise PotlutDataError(
            f"{folder}: missing {', '.join(missing)} (a {what} folder holds {', '.join(expected)})"
        )
    return folder


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 N x 3 x H x W images, in [0, 1] units."""
    mean, std = [], []
    for c in range(images.shape[1]):
        ch = images[:, c].astype(np.float64) / 255.0
        mean.append(float(ch.mean()))
        std.append(max(float(ch.std()), 1e-6))
    return mean, std


class Rows:
    """``read(i)``: the i-th image of an in-memory uint8 tensor (picklable for workers)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __call__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _bundle(name: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray,
            num_classes: int, augment: bool) -> DataBundle:
    mean, std = channel_stats(xtr)
    tr = torch.from_numpy(np.ascontiguousarray(xtr))
    te = torch.from_numpy(np.ascontiguousarray(xte))
    evaluate = EvalTransform(mean, std, 32)
    return DataBundle(
        name=name,
        train=AugmentedImages(Rows(tr), torch.from_numpy(ytr),
                              CifarTrain(mean, std) if augment else evaluate),
        test=AugmentedImages(Rows(te), torch.from_numpy(yte), evaluate),
        num_classes=num_classes,
        in_shape=(3, 32, 32),
    )


def load_cifar10(path: str) -> DataBundle:
    """``cifar10:DIR[?augment=0]`` where DIR is ``cifar-10-batches-py``."""
    base, opts = parse_options(path, {"augment": bool})
    if (Path(base) / "cifar-10-batches-py").is_dir():  # the folder that holds the archive's
        base = str(Path(base) / "cifar-10-batches-py")
    folder = _folder(base, CIFAR10_REQUIRED, "cifar-10-batches-py")
    # data_batch_1 .. data_batch_k for the highest k present: a gap is a missing file
    k = max(i for i in range(1, 6) if (folder / f"data_batch_{i}").is_file())
    train_files = CIFAR10_FILES[:k]
    _folder(str(folder), [*train_files, *CIFAR10_REQUIRED[1:]], "cifar-10-batches-py")
    parts = []
    for fname in [*train_files, "test_batch"]:
        p = folder / fname
        d = read_pickle(p)
        x = _images(p, d)
        parts.append((x, _labels(p, d, b"labels", len(x), 10)))
    xtr = np.concatenate([x for x, _ in parts[:-1]])
    ytr = np.concatenate([y for _, y in parts[:-1]])
    return _bundle("cifar10", xtr, ytr, *parts[-1], 10, bool(opts.get("augment", True)))


def load_cifar100(path: str) -> DataBundle:
    """``cifar100:DIR[?labels=coarse&augment=0]`` where DIR is ``cifar-100-python``."""
    base, opts = parse_options(path, {"labels": str, "augment": bool})
    which = opts.get("labels", "fine")
    if which not in ("fine", "coarse"):
        raise PotlutDataError(f"cifar100 labels must be fine or coarse, got {which!r}")
    folder = _folder(base, CIFAR100_FILES, "cifar-100-python")
    key, count = (b"fine_labels", 100) if which == "fine" else (b"coarse_labels", 20)
    meta = folder / "meta"
    _names(meta, read_pickle(meta), b"fine_label_names" if which == "fine"
           else b"coarse_label_names", count)
    splits = []
    for fname in ("train", "test"):
        p = folder / fname
        d = read_pickle(p)
        x = _images(p, d)
        splits.append((x, _labels(p, d, key, len(x), count)))
    name = "cifar100" if which == "fine" else "cifar100-coarse"
    return _bundle(name, *splits[0], *splits[1], count, bool(opts.get("augment", True)))


def write_cifar_pickle(path: str | Path, d: dict) -> None:
    """Write ``d`` the way the original CIFAR files are laid out (for tests and tools).

    Protocol 3 keeps ``bytes`` keys and array data as raw bytes; the numpy module path is
    written as ``numpy.core.multiarray`` as in the distributed files.
    """
    raw = pickle.dumps(d, protocol=3)
    raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    Path(path).write_bytes(raw)
