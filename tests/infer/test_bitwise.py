"""Bitwise inference of LS-1 / LS-2 / LS-T layers (XNOR/AND + popcount) equals the integer
reference bit for bit: on hand-made planes, random models (ResNet20: residuals, 1x1
shortcuts-free option A, linear) and trained digits models."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from potlut import data
from potlut.infer import IntEngine, lower, run_reference
from potlut.infer.bitwise import (
    bitwise_layers,
    c_kernel,
    pack,
    planes,
    popcount,
    run_bitwise,
)
from potlut.pipeline import MODEL_FILE, RunConfig, run

from .helpers import random_graph

LS = ["ls1", "ls2", "lst"]
BACKENDS = ["numpy", "c"]


def _need(backend: str) -> None:
    if backend == "c" and c_kernel() is None:
        if os.environ.get("CI"):
            raise AssertionError("the C popcount kernel must build in CI")
        pytest.skip("no C compiler")


def test_planes_rebuild_the_values_by_hand():
    # LS-2 magnitudes a = 3, b = 8 (a + b odd): planes (a + b) = 11 and (b - a) = 5, doubled:
    # +3 -> 11 - 5 = 6, -8 -> -11 - 5 = -16, +8 -> 16, -3 -> -6
    vals = np.array([3, 8])
    mag, neg = np.array([3, 8, 8, 3]), np.array([False, True, False, True])
    coefs, signs, mask = planes(vals, mag, neg, "t")
    assert coefs == [11, 5] and mask.all()
    pm = [1 - 2 * s.astype(int) for s in signs]
    assert (coefs[0] * pm[0] + coefs[1] * pm[1]).tolist() == [6, -16, 16, -6]
    # ternary {0, 1}: one plane 2, zeros masked out
    coefs, signs, mask = planes(np.array([0, 1]), np.array([0, 1, 1]),
                                np.array([False, True, False]), "t")
    assert coefs == [2] and mask.tolist() == [False, True, True]
    assert signs[0].tolist() == [False, True, False]


def test_pack_and_popcount():
    bits = np.zeros((2, 130), dtype=bool)
    bits[0, [0, 63, 64, 129]] = True
    bits[1, :] = True
    words = pack(bits)
    assert words.shape == (2, 3) and words.dtype == np.uint64
    assert popcount(words).tolist() == [4, 130]
    assert int(words[0, 0]) == 1 | (1 << 63)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", LS)
@pytest.mark.parametrize("model,shape", [("small_cnn", (1, 8, 8)), ("resnet20", (3, 8, 8))])
def test_bitwise_equals_reference_on_random_models(scheme, model, shape, backend):
    _need(backend)
    prog = lower(random_graph(model, shape, 4, seed=5, scheme=scheme))
    names = bitwise_layers(prog)
    assert len(names) == len(prog.layers()) - 2  # all but the 8-bit first and last layers
    torch.manual_seed(1)
    x = torch.randn(3, *shape)
    ref = run_reference(prog, x)
    assert np.abs(ref).max() > 2 ** prog.frac_bits // 100  # not all zero
    np.testing.assert_array_equal(run_bitwise(prog, x, backend), ref)


@pytest.mark.parametrize("scheme", LS)
def test_bitwise_equals_reference_on_trained_digits_model(scheme, tmp_path):
    cfg = RunConfig(scheme=scheme, epochs=3, qat_epochs=3, seed=0, device="cpu")
    report = run(cfg, tmp_path, progress=False)
    torch.set_num_threads(1)
    engine = IntEngine(tmp_path / MODEL_FILE)
    prog = engine.program
    assert bitwise_layers(prog) == ["features.3", "features.6"]
    bundle = data.load("digits")
    x = torch.stack([bundle.test[i][0] for i in range(len(bundle.test))])
    labels = np.array([bundle.test[i][1] for i in range(len(bundle.test))])
    ref = run_reference(prog, x)
    bw = run_bitwise(prog, x, "numpy")
    np.testing.assert_array_equal(bw, ref)
    if c_kernel() is not None or os.environ.get("CI"):
        np.testing.assert_array_equal(run_bitwise(prog, x, "c"), ref)
    np.testing.assert_array_equal(engine.run(x), ref)
    top1 = 100 * np.mean(bw.argmax(1) == labels)
    assert top1 == pytest.approx(report["int_top1"], abs=1e-3)
    assert top1 > 80  # a trained model, not chance
