"""Rate-distortion evaluation: matched rates never exceed their target; metrics are sane."""

from __future__ import annotations

import json

import numpy as np
import pytest

from potlut.codec.data import read_rgb
from potlut.codec.evaluate import (
    METHODS,
    evaluate,
    merge,
    msssim,
    pillow_at_most,
    pillow_encode,
    psnr,
)


@pytest.fixture(scope="module")
def crop(photos):
    return read_rgb(photos / "002.png")[:176, :192].copy()


def test_metrics(crop):
    assert msssim(crop, crop) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(crop.astype(int) + 10 * (np.arange(crop.size) % 2).reshape(crop.shape) - 5,
                    0, 255).astype(np.uint8)
    mse = np.mean((crop.astype(float) - noisy) ** 2)
    assert psnr(crop, noisy) == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-9)
    assert 0.5 < msssim(crop, noisy) < 1


@pytest.mark.parametrize("fmt", ["JPEG", "WebP", "JPEG 2000"])
def test_pillow_at_most_is_the_best_setting_not_above_target(crop, fmt):
    pixels = crop.shape[0] * crop.shape[1]
    bpp, dec = pillow_at_most(crop, fmt, 1.0)
    assert bpp <= 1.0 and dec.shape == crop.shape
    if fmt == "JPEG":  # the next quality step is above the target
        q = next(q for q in range(1, 96) if 8 * pillow_encode(crop, fmt, q)[0] / pixels == bpp)
        assert 8 * pillow_encode(crop, fmt, q + 1)[0] / pixels > 1.0
    if fmt == "JPEG 2000":  # rate control lands within 5 % below the target
        assert bpp > 0.95


def test_evaluate_writes_table_plot_and_points_within_targets(tiny, crop, tmp_path):
    model, _ = tiny
    summary = evaluate(model, [("crop", crop)], tmp_path, log=lambda m: None)
    data = json.loads((tmp_path / "rd.json").read_text())
    for m in METHODS:
        for r, p in data["per_image"][0][m].items():
            assert p is None or p["bpp"] <= float(r)
    assert (tmp_path / "rd.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "rd.md").read_text().splitlines()
    assert len(table) == 2 + len(METHODS) and table[2].startswith("| RNN (adaptive) |")
    assert summary["JPEG"][1.0]["bpp"] <= 1.0
    twice = merge([tmp_path / "rd.json"] * 2, tmp_path / "merged")
    assert twice["JPEG"][1.0] == {**summary["JPEG"][1.0], "n": 2}


def test_small_images_are_skipped(tiny, crop, tmp_path):
    logs = []
    summary = evaluate(tiny[0], [("thin", crop[:150])], tmp_path, log=logs.append)
    assert summary == {} and "thin" in logs[0]
