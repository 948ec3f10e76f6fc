"""FIXOPS and weight size of the digits model, FP32 and 4-bit IOS-PoT (README's table)."""

from __future__ import annotations

from potlut import models
from potlut.metrics import fixops, weight_bytes
from potlut.nn import QuantSpec, convert


def test_small_cnn_fixops_and_weight_bytes() -> None:
    fp32 = models.build("small_cnn", 10, 1)
    q = convert(fp32, QuantSpec(bits=4))
    # FP32: 157,312 MACs x 16 FIXOPS each; 4-bit middle layers cost 4*4/64, 8-bit ends 1
    assert fixops(fp32, (1, 8, 8)) == 157_312 * 16 == 2_516_992
    assert fixops(q, (1, 8, 8)) == 46_720
    assert weight_bytes(fp32) == 96_232
    assert weight_bytes(q) == 13_240
