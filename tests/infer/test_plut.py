"""P-LUT tables: half storage when symmetric, exact products, sign by XOR, int32 safety."""

from __future__ import annotations

import numpy as np
import pytest

from potlut.infer import UnsupportedModelError, build_plut, lower
from potlut.infer.plut import INT32_MAX, integer_codebook, round_shift
from potlut.quant.iospot import pot_levels

from .helpers import random_graph


def test_4bit_layer_stores_8x8_products_in_36_entries() -> None:
    prog = lower(random_graph("small_cnn", (1, 8, 8), 4))
    mid = [s for s in prog.layers() if s.mode == "plut"]
    assert [s.module for s in mid] == ["features.3", "features.6"]
    for s in mid:
        t = s.plut
        assert (t.nw, t.na, t.symmetric, t.entries.size, t.shift) == (8, 8, True, 36, 0)
        assert list(t.w_values) == [0, 1, 2, 4, 8, 16, 32, 64]
        full = t.table()
        assert full.shape == (8, 8) and np.array_equal(full, full.T)
        assert np.array_equal(full, np.outer(t.w_values, t.a_values))
        assert t.entries.dtype == np.int16 and t.nbytes == 72  # largest product 64 * 64
    # the 8-bit first/last layers are int8 MACs, not tables
    assert [s.mode for s in prog.layers()] == ["int8", "plut", "plut", "int8"]


def test_codebook_values_times_unit_are_the_file_codebook() -> None:
    for bits, exp in [(3, 1), (4, -2), (5, 3)]:
        cb = (pot_levels(bits).double() * 2.0**exp).numpy().astype(np.float32)
        values, unit = integer_codebook(cb, "t")
        n = 2 ** (bits - 1)
        assert unit == exp - (n - 2)
        assert list(values) == [0] + [2**j for j in range(n - 1)]
    with pytest.raises(UnsupportedModelError, match="integers times a power of two"):
        integer_codebook(np.array([0.0, 0.1, 0.3]), "layer x")


def test_signed_rows_take_the_sign_from_the_xor_of_sign_bits() -> None:
    t = build_plut(np.array([0, 1, 2, 4]), np.array([0, 1, 2, 4]))  # 3-bit
    assert t.entries.size == 10
    rows = t.signed_rows(a_signed=True)  # codes 0..7: bit 2 is the sign
    assert rows.shape == (8, 8)
    full = t.table()
    for sw in range(8):
        for sa in range(8):
            sign = -1 if ((sw >> 2) ^ (sa >> 2)) & 1 else 1
            assert rows[sw, sa] == sign * full[sw & 3, sa & 3]
    assert rows[7, 7] == 16 and rows[3, 7] == -16 and rows[7, 3] == -16 and rows[0, 7] == 0


def test_5bit_table_shift_is_the_smallest_that_keeps_int32() -> None:
    v = np.array([0] + [2**j for j in range(15)])  # 5-bit IOS-PoT values, products to 2^28
    codes = np.full((4, 576), 15)  # worst case: every weight at the largest code
    t = build_plut(v, v, codes)
    worst = lambda s: int(round_shift(v[codes] * v.max(), s).sum(axis=1).max())  # noqa: E731
    assert worst(t.shift) <= INT32_MAX < worst(t.shift - 1)
    assert t.shift == 7 and t.entries.size == 16 * 17 // 2  # 576 * 2^28 / 2^7 < 2^31
    # entries: round half up of 2^(i+j-2) / 2^7
    full = t.table()
    assert full[15, 15] == 2**21 and full[1, 8] == 1 and full[0, 15] == 0
    assert full[1, 7] == 1 and full[1, 6] == 0 and full[2, 6] == 1  # 1/2 rounds up, 1/4 down


def test_trained_graph_shifts_only_where_needed() -> None:
    prog4 = lower(random_graph("resnet20", (3, 32, 32), 4, seed=4))
    assert {s.plut.shift for s in prog4.layers() if s.plut} == {0}
    for s in prog4.layers():
        bound = (s.w_values[s.w_codes.reshape(s.out_channels, -1).astype(int)].sum(1)
                 * int(s.act.values.max()))
        assert int(bound.max()) <= INT32_MAX  # worst accumulator of every layer fits int32
