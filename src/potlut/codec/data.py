"""Training patches for the codec: random crops of photos and CIFAR images, in memory.

The photos are split by position in sorted order: every fifth image (004, 009, ...
counting from 0) is held out for ``potlut codec eval``, so the curves are measured on
photos the model never trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from potlut.errors import PotlutDataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}
HOLDOUT_EVERY = 5


def image_paths(folder: str | Path) -> list[Path]:
    """Sorted image files of ``folder``; an error when it has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PotlutDataError(f"{folder}: no such folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    if not paths:
        raise PotlutDataError(f"{folder}: no images ({', '.join(sorted(EXTENSIONS))})")
    return paths


def split(paths: list[Path], part: str) -> list[Path]:
    """``train`` (4 of 5), ``test`` (every fifth, index 4, 9, ...) or ``all``."""
    if part == "all":
        return list(paths)
    test = [p for i, p in enumerate(paths) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]
    if part == "test":
        return test
    return [p for p in paths if p not in test]


def read_rgb(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8; unreadable files are a one-line error."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise PotlutDataError(f"{path}: not a readable image ({exc})") from None


def cifar_images(folder: str | Path) -> list[np.ndarray]:
    """Every image of a cifar-10-batches-py folder (or its parent) as 32 x 32 x 3 uint8."""
    from potlut.data.cifar import read_pickle

    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    out = []
    for f in sorted(folder.glob("*_batch*")):
        rows = np.asarray(read_pickle(f)[b"data"], dtype=np.uint8)
        out.extend(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    if not out:
        raise PotlutDataError(f"{folder}: no CIFAR batches (data_batch_*, test_batch)")
    return out


class Patches:
    """Random ``size`` x ``size`` crops (random horizontal flip) of a list of images."""

    def __init__(self, images: list[np.ndarray], size: int, seed: int = 0):
        self.images = [im for im in images if im.shape[0] >= size and im.shape[1] >= size]
        if not self.images:
            raise PotlutDataError(f"no training image is at least {size}x{size} pixels")
        weights = np.array([(im.shape[0] - size + 1) * (im.shape[1] - size + 1)
                            for im in self.images], dtype=np.float64)
        # photos by area, each CIFAR image once: half the patches from each source
        big = weights > 1
        if big.any() and (~big).any():
            weights[big] *= (~big).sum() / weights[big].sum()
        self.p = weights / weights.sum()
        self.size = size
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        """N x 3 x size x size floats in [-0.5, 0.5]."""
        s = self.size
        out = np.empty((n, s, s, 3), np.uint8)
        for k, i in enumerate(self.rng.choice(len(self.images), n, p=self.p)):
            im = self.images[i]
            y = self.rng.integers(0, im.shape[0] - s + 1)
            x = self.rng.integers(0, im.shape[1] - s + 1)
            crop = im[y:y + s, x:x + s]
            out[k] = crop[:, ::-1] if self.rng.random() < 0.5 else crop
        return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255 - 0.5
