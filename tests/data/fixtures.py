"""Writers of tiny data sets in the exact on-disk formats the loaders read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from potlut.data.cifar import write_cifar_pickle


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    """cifar-10-batches-py with 5 training batches of ``per_batch`` images and a test batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, n in enumerate([per_batch] * 5 + [n_test]):
        name = f"data_batch_{i + 1}" if i < 5 else "test_batch"
        write_cifar_pickle(folder / name, {
            b"batch_label": f"{name} of 5".encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)],
        })
    write_cifar_pickle(folder / "batches.meta", {
        b"num_cases_per_batch": per_batch,
        b"label_names": [c.encode() for c in ("airplane automobile bird cat deer dog frog "
                                              "horse ship truck").split()],
        b"num_vis": 3072,
    })
    return folder


def write_cifar100(root: Path, n_train: int = 40, n_test: int = 12, seed: int = 0) -> Path:
    """cifar-100-python with fine (0..99) and coarse (0..19) labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        write_cifar_pickle(folder / name, {
            b"filenames": [f"{name}_{j}.png".encode() for j in range(n)],
            b"batch_label": name.encode(),
            b"fine_labels": [int(v) for v in fine],
            b"coarse_labels": [int(v) // 5 for v in fine],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        })
    write_cifar_pickle(folder / "meta", {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    })
    return folder


def write_image(path: Path, rng: np.random.Generator, h: int, w: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def write_folder(root: Path, classes=("cat", "dog", "eel"), per_class=(3, 2),
                 size=(40, 48), seed: int = 0, val_name: str = "val") -> Path:
    """train/<class>/ and val/<class>/ with PNG and JPEG files of ``size`` (h, w)."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", val_name), per_class, strict=True):
        for c in classes:
            for j in range(n):
                ext = ".png" if j % 2 == 0 else ".jpg"
                write_image(root / split / c / f"{c}_{j}{ext}", rng, *size)
    return root


def write_rafdb_original(root: Path, n_train: int = 14, n_test: int = 7, seed: int = 0) -> Path:
    """RAF-DB basic release layout: EmoLabel/list_patition_label.txt + Image/aligned/."""
    rng = np.random.default_rng(seed)
    lines = []
    for split, n in (("train", n_train), ("test", n_test)):
        for j in range(n):
            name = f"{split}_{j + 1:05d}"
            lines.append(f"{name}.jpg {j % 7 + 1}")
            write_image(root / "Image" / "aligned" / f"{name}_aligned.jpg", rng, 100, 100)
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root
