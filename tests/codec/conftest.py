"""Fixtures of the codec tests: a real photo crop and a tiny codec trained a few steps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from potlut.codec.data import read_rgb


def shared_photos() -> Path | None:
    """``$POTLUT_SHARED_DATA/photos`` (CI), else ../shared/data/photos near the checkout."""
    env = os.environ.get("POTLUT_SHARED_DATA")
    if env and (Path(env) / "photos").is_dir():
        return Path(env) / "photos"
    for parent in Path(__file__).resolve().parents[2:5]:
        if (parent / "shared/data/photos").is_dir():
            return parent / "shared/data/photos"
    return None


@pytest.fixture(scope="session")
def photos() -> Path:
    path = shared_photos()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI: the photos sample (../shared/data/photos) is missing")
        pytest.skip("the photos sample (../shared/data/photos) is not here")
    return path


@pytest.fixture(scope="session")
def photo(photos) -> np.ndarray:
    """A 64 x 96 crop of a real photo (sides multiples of 16: every tile lies inside)."""
    return read_rgb(photos / "001.png")[120:184, 200:296].copy()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, photos):
    """(model, checkpoint path): a width-16, 8-bit, 4-iteration codec trained 60 steps."""
    from potlut.codec.model import CodecConfig
    from potlut.codec.train import CodecTrainConfig, load_model, load_training_images, train

    path = tmp_path_factory.mktemp("codec") / "tiny.pt"
    cfg = CodecConfig(bits=8, iterations=4, width=16, prime_steps=1, diffuse_steps=1)
    train(load_training_images(photos, None), path, cfg,
          CodecTrainConfig(steps=60, batch=8, lr=1e-2, save_every=20), log=lambda m: None)
    return load_model(path), path
