"""Image folders (ImageNet-style and RAF-DB): one sub-folder per class, PNG or JPEG files.

Layout::

    DIR/train/<class>/*.jpg|*.jpeg|*.png
    DIR/val/<class>/...        (``test/`` is accepted instead of ``val/``)

Classes are the sorted sub-folder names of ``train/``; ``val/`` may hold a subset of them.
Images are decoded with Pillow (converted to RGB) when a sample is read, so a data set of
any size costs only its file list up front; DataLoader workers do the decoding.

RAF-DB also loads from its original release layout: ``DIR/EmoLabel/list_patition_label.txt``
(lines ``train_00001.jpg 5``, labels 1..7) with images in ``DIR/Image/aligned/`` (named
``train_00001_aligned.jpg``) or ``DIR/Image/original/``.

Options: ``folder:DIR?size=224&augment=1`` (``size``: square input side; training uses
random-resized crop + flip, evaluation short side to size*256/224 + centre crop).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from potlut.data.bundle import DataBundle
from potlut.data.transforms import (
    AugmentedImages,
    ImageNetTrain,
    imagenet_eval,
    parse_options,
)
from potlut.errors import PotlutDataError

EXTENSIONS = (".jpg", ".jpeg", ".png")
RAFDB_CLASSES = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
RAFDB_LABELS = "EmoLabel/list_patition_label.txt"


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as a uint8 RGB tensor (3, H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise PotlutDataError(f"{path}: not a readable PNG/JPEG image ({exc})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class FileReader:
    """``read(i)``: decode the i-th file (picklable for DataLoader workers)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, i: int) -> torch.Tensor:
        return read_image(self.paths[i])


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def scan_split(
    split: Path, classes: list[str] | None = None
) -> tuple[list[str], list[int], list[str]]:
    """(paths, labels, classes) of one split folder of class sub-folders."""
    found = sorted(p.name for p in split.iterdir() if p.is_dir())
    if not found:
        raise PotlutDataError(f"{split}: no class sub-folders (expected {split}/<class>/*.jpg)")
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise PotlutDataError(f"{split}: classes {extra[:5]} are not in train/")
    index = {c: i for i, c in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for c in found:
        files = _images_in(split / c)
        paths += [str(f) for f in files]
        labels += [index[c]] * len(files)
    if not paths:
        raise PotlutDataError(f"{split}: no {'/'.join(EXTENSIONS)} images in its class folders")
    return paths, labels, classes


def _val_dir(root: Path) -> Path:
    for name in ("val", "test"):
        if (root / name).is_dir():
            return root / name
    raise PotlutDataError(f"{root}: no val/ (or test/) folder next to train/")


def _bundle(name: str, train: tuple[list[str], list[int]], test: tuple[list[str], list[int]],
            num_classes: int, size: int, augment: bool) -> DataBundle:
    if not 8 <= size <= 1024:
        raise PotlutDataError(f"image size must be 8..1024, got {size}")
    read_image(train[0][0])  # fail now, not inside a worker, if the files are not images
    evaluate = imagenet_eval(size)
    return DataBundle(
        name=name,
        train=AugmentedImages(FileReader(train[0]), torch.tensor(train[1], dtype=torch.int64),
                              ImageNetTrain(size) if augment else evaluate),
        test=AugmentedImages(FileReader(test[0]), torch.tensor(test[1], dtype=torch.int64),
                             evaluate),
        num_classes=num_classes,
        in_shape=(3, size, size),
    )


FOLDER_OPTIONS = {"size": int, "augment": bool}


def load_folder(path: str, name: str = "folder", expect_classes: int | None = None) -> DataBundle:
    """``folder:DIR[?size=224&augment=1]``: an ImageNet-style train/val class-folder tree."""
    base, opts = parse_options(path, FOLDER_OPTIONS)
    root = Path(base)
    if not (root / "train").is_dir():
        raise PotlutDataError(
            f"{root}: expected train/<class>/*.jpg and val/<class>/*.jpg (one folder per class)"
        )
    tr_paths, tr_labels, classes = scan_split(root / "train")
    te_paths, te_labels, _ = scan_split(_val_dir(root), classes)
    if expect_classes is not None and len(classes) != expect_classes:
        raise PotlutDataError(
            f"{root}: {name} has {expect_classes} classes, found {len(classes)} in train/"
        )
    return _bundle(name, (tr_paths, tr_labels), (te_paths, te_labels), len(classes),
                   int(opts.get("size", 224)), bool(opts.get("augment", True)))


def load_rafdb(path: str) -> DataBundle:
    """``rafdb:DIR``: RAF-DB basic (7 expressions), class folders or the original layout."""
    base, opts = parse_options(path, FOLDER_OPTIONS)
    root = Path(base)
    if not (root / RAFDB_LABELS).is_file():
        if not root.is_dir():
            raise PotlutDataError(
                f"{root}: no such folder (expected RAF-DB: {RAFDB_LABELS} + Image/aligned/, "
                "or train/ and val/ with 7 class folders)"
            )
        return load_folder(path, name="rafdb", expect_classes=len(RAFDB_CLASSES))
    splits: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    label_file = root / RAFDB_LABELS
    for lineno, line in enumerate(label_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 7 \
                or parts[0].split("_")[0] not in splits:
            raise PotlutDataError(
                f"{label_file}:{lineno}: expected 'train_00001.jpg 5' (label 1..7), got {line!r}"
            )
        stem = Path(parts[0]).stem
        aligned = root / "Image" / "aligned" / f"{stem}_aligned.jpg"
        image = aligned if aligned.is_file() else root / "Image" / "original" / parts[0]
        if not image.is_file():
            raise PotlutDataError(f"{root}: {parts[0]} listed but neither {aligned} nor {image} "
                                  "exists")
        split = splits[parts[0].split("_")[0]]
        split[0].append(str(image))
        split[1].append(int(parts[1]) - 1)
    if not splits["train"][0] or not splits["test"][0]:
        raise PotlutDataError(f"{label_file}: needs both train_* and test_* entries")
    return _bundle("rafdb", splits["train"], splits["test"], len(RAFDB_CLASSES),
                   int(opts.get("size", 224)), bool(opts.get("augment", True)))
