"""Image augmentation in plain PyTorch, deterministic given (seed, epoch, sample index).

Each random choice of sample ``i`` draws from a generator seeded with ``(key, i)``, where
``key`` is set per epoch by the training loop (``dataset.set_epoch(key)``). So a sample's
augmentation does not depend on the DataLoader worker that loads it, on the number of
workers, on the rank that trains it, or on a resumed run: the same seed gives the same
pixels. Images travel as uint8 CHW tensors until the final normalization.

Standard recipes: CIFAR (random crop 32 with 4-pixel zero padding, horizontal flip,
normalization) and ImageNet-style 224 inputs (random-resized crop with scale 0.08..1 and
aspect 3/4..4/3, flip; evaluation resizes the short side to size*256/224 and crops the
centre).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from potlut.errors import PotlutDataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sample_generator(key: int, index: int) -> torch.Generator:
    """The generator of sample ``index`` in the epoch whose shuffling key is ``key``."""
    g = torch.Generator()
    g.manual_seed((key * 1_000_003 + index) % (2**63 - 1))
    return g


def _uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in ``[lo, hi]`` (both ends included)."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def random_crop(img: torch.Tensor, size: int, padding: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` on every side, then crop a random ``size`` x ``size`` window."""
    if padding:
        img = F.pad(img, (padding, padding, padding, padding))
    h, w = img.shape[-2:]
    top, left = _randint(g, 0, h - size), _randint(g, 0, w - size)
    return img[..., top : top + size, left : left + size]


def random_hflip(img: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror left-right with probability ``p``."""
    return img.flip(-1) if _uniform(g) < p else img


def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking) of a uint8 or float CHW image to float."""
    x = img.float()[None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0]


def random_resized_crop_box(
    h: int, w: int, g: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop with random area fraction and aspect ratio.

    Ten tries as in the usual recipe, then a centre crop clamped to the allowed ratios.
    """
    area = h * w
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(g, *scale)
        aspect = math.exp(_uniform(g, log_lo, log_hi))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return _randint(g, 0, h - ch), _randint(g, 0, w - cw), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        ch, cw = h, round(h * ratio[1])
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return img[..., top : top + size, left : left + size]


def resize_short_side(img: torch.Tensor, short: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    if h <= w:
        return resize(img, (short, max(1, round(w * short / h))))
    return resize(img, (max(1, round(h * short / w)), short))


class Normalize:
    """``(x / 255 - mean) / std`` per channel, on a uint8 or float [0, 255] image."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return (img.float() / 255.0 - self.mean) / self.std


class CifarTrain:
    """Random crop with padding, horizontal flip, normalization (32x32 inputs)."""

    random = True

    def __init__(self, mean, std, size: int = 32, padding: int = 4) -> None:
        self.norm, self.size, self.padding = Normalize(mean, std), size, padding

    def __call__(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.norm(random_hflip(random_crop(img, self.size, self.padding, g), g))


class ImageNetTrain:
    """Random-resized crop to ``size``, horizontal flip, normalization."""

    random = True

    def __init__(self, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        self.norm, self.size = Normalize(mean, std), size

    def __call__(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        top, left, ch, cw = random_resized_crop_box(*img.shape[-2:], g)
        crop = resize(img[..., top : top + ch, left : left + cw], (self.size, self.size))
        return self.norm(random_hflip(crop, g))


class EvalTransform:
    """No randomness: resize the short side to ``resize_to`` (if set), centre-crop, normalize."""

    random = False

    def __init__(self, mean, std, size: int, resize_to: int | None = None) -> None:
        self.norm, self.size, self.resize_to = Normalize(mean, std), size, resize_to

    def __call__(self, img: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        if self.resize_to is not None:
            img = center_crop(resize_short_side(img, self.resize_to), self.size)
        return self.norm(img)


def imagenet_eval(size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> EvalTransform:
    """Short side to ``size * 256 / 224``, centre crop ``size``."""
    return EvalTransform(mean, std, size, resize_to=round(size * 256 / 224))


Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class AugmentedImages(Dataset):
    """``(transform(image_i, generator(key, i)), label_i)`` over a source of uint8 images.

    ``read(i)`` returns the i-th raw image as a uint8 CHW tensor. ``set_epoch(key)`` is
    called by the training loop before each epoch; workers get a copy with that key.
    """

    def __init__(self, read: Callable[[int], torch.Tensor], labels: torch.Tensor,
                 transform: Transform) -> None:
        self.read, self.labels, self.transform = read, labels, transform
        self.key = 0

    def set_epoch(self, key: int) -> None:
        self.key = int(key)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = sample_generator(self.key, i) if getattr(self.transform, "random", True) else None
        return self.transform(self.read(i), g), self.labels[i]


def parse_options(path: str, allowed: dict[str, type]) -> tuple[str, dict[str, object]]:
    """Split ``DIR?key=value&key=value`` (options of ``--data KIND:DIR?...``) into parts.

    Only ``allowed`` keys (with their types) are accepted, so a typo is an error.
    """
    base, _, query = path.partition("?")
    opts: dict[str, object] = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key not in allowed:
            raise PotlutDataError(
                f"unknown data option {key!r} in {path!r}; known: {', '.join(sorted(allowed))}"
            )
        typ = allowed[key]
        try:
            opts[key] = (value.lower() in ("1", "true", "yes")) if typ is bool else typ(value)
        except ValueError:
            raise PotlutDataError(f"data option {key}={value!r} is not a {typ.__name__}") from None
    return base, opts
