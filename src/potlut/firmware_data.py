"""The data side of firmware: a data set's test pixels and the normalization the C input
table folds in.

It reads data sets (torch, scikit-learn, imported only when a data set is asked for), so it
lives beside the pipeline, not in ``potlut.deploy``, which imports numpy only.
"""

from __future__ import annotations

import numpy as np

from potlut.deploy.c_printer import Normalization
from potlut.errors import PotlutConfigError


def digits_normalization() -> Normalization:
    """The digits bundle's standardization (pixels 0..16 / 16, training mean and std)."""
    import torch

    from potlut.data import digits
    from potlut.data.bundle import channel_stats

    xtr = digits.split()[0]
    mean, std = channel_stats(torch.from_numpy(xtr.astype(np.float32) / 16.0))
    return Normalization(16.0, tuple(mean.flatten().tolist()), tuple(std.flatten().tolist()))


def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split as uint8 pixels ``[N, 1, 8, 8]`` (0..16) and labels."""
    from potlut.data import digits

    _, xte, _, yte = digits.split()
    return xte, yte


def normalization(spec: str, channels: int) -> Normalization:
    """``digits``, a data set ``KIND:DIR`` (its loader's statistics) or
    ``SCALE:MEAN,..:STD,..`` as a :class:`Normalization`."""
    if spec == "digits":
        norm = digits_normalization()
    elif not spec.partition(":")[0].replace(".", "", 1).isdigit():  # a data set, not SCALE
        norm = test_images(spec, channels)[2]
    else:
        try:
            scale, mean, std = spec.split(":")
            norm = Normalization(float(scale), tuple(float(v) for v in mean.split(",")),
                                 tuple(float(v) for v in std.split(",")))
        except ValueError:
            raise PotlutConfigError(f"--data {spec!r}: use digits, KIND:DIR or "
                                    "SCALE:MEAN,..:STD,.. (e.g. 255:0.49,0.48,0.45:0.25,0.24,"
                                    "0.26)") from None
    if len(norm.mean) != channels or len(norm.std) != channels:
        raise PotlutConfigError(f"--data {spec!r} gives {len(norm.mean)} channels, the model "
                                f"has {channels}")
    if norm.scale <= 0 or any(s <= 0 for s in norm.std):
        raise PotlutConfigError(f"--data {spec!r}: scale and std must be positive")
    return norm


def test_images(spec: str, channels: int) -> tuple[np.ndarray, np.ndarray, Normalization]:
    """A data set's test split as uint8 pixels ``[N, C, H, W]``, its labels, and the
    normalization that turns those pixels into exactly the model inputs its loader gives."""
    from potlut import data
    from potlut.data.transforms import AugmentedImages, EvalTransform

    if spec == "digits":
        pixels, labels = digits_pixels()
        norm = digits_normalization()
    else:
        test = data.load(spec).test
        ev = getattr(test, "transform", None)
        if not (isinstance(test, AugmentedImages) and isinstance(ev, EvalTransform)
                and ev.resize_to is None):
            raise PotlutConfigError(f"--data {spec!r}: firmware test images need digits or a "
                                    "data set of uint8 images at model size (e.g. cifar10:DIR)")
        pixels = np.stack([test.read(i).numpy() for i in range(len(test))]).astype(np.uint8)
        labels = test.labels.numpy()
        norm = Normalization(255.0, tuple(float(v) for v in ev.norm.mean.flatten()),
                             tuple(float(v) for v in ev.norm.std.flatten()))
    if pixels.shape[1] != channels:
        raise PotlutConfigError(f"--data {spec!r} gives {pixels.shape[1]} channels, the model "
                                f"has {channels}")
    return pixels, labels.astype(np.int64), norm
