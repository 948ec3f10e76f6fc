"""Accumulator thresholds are the exact decision ``|floor(m * acc + b)| >= theta`` (property
test), computed here with Python rationals, independently of the lowering's formulas, and
the codes the requantized fixed tensor gets (the fusion changes no code)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from potlut.infer.program import ActQuant, accumulator_thresholds, make_requant, requant_np
from potlut.infer.reference import quantize_fixed

I32 = 2**31 - 1
F = 20


def thetas(mids) -> np.ndarray:
    """The integer thresholds ``ceil(mid * 2^F)`` (exact: a float times 2^F is exact)."""
    return np.array([-((-Fraction(v) * 2**F).numerator // (Fraction(v) * 2**F).denominator)
                     for v in mids], dtype=np.int64)


def codes_exact(acc, m, b, mids, relu, signed):
    """Codes of the fixed value ``floor(m * acc + b)``: count of thresholds at or below it."""
    m, b = Fraction(m), Fraction(b)
    mids = [Fraction(int(t)) for t in thetas(mids)]
    codes, negs = [], []
    for a in acc:
        y = Fraction((m * int(a) + b).__floor__())
        if relu:
            y = max(y, Fraction(0))
        mag = abs(y) if signed else max(y, Fraction(0))
        c = sum(mag >= t for t in mids)
        codes.append(c)
        negs.append(bool(signed and y < 0 and c > 0))
    return np.array(codes), np.array(negs)


def codes_by_thresholds(acc, flip, up, wn):
    a = np.where(flip, -acc.astype(np.int64), acc)
    cp = (a[:, None] > up[None, :]).sum(1)
    cn = (a[:, None] <= wn[None, :]).sum(1) if wn is not None else np.zeros_like(cp)
    return cp + cn, cn > 0


@settings(max_examples=150, deadline=None)
@given(
    m=st.one_of(st.just(0.0), st.floats(-1e3, 1e3, allow_nan=False),
                st.sampled_from([2.0**-20, 2.0**-3, 1.0, 8.0, -0.1])),
    b=st.floats(-(2.0**34), 2.0**34, allow_nan=False),
    mids=st.lists(st.floats(2.0**-24, 4096.0), min_size=1, max_size=15, unique=True),
    relu=st.booleans(), signed=st.booleans(),
    acc=st.lists(st.integers(-I32, I32), min_size=1, max_size=32),
)
def test_thresholds_are_the_exact_decision(m, b, mids, relu, signed, acc) -> None:
    mids = sorted(mids)
    rq = make_requant(np.array([m]), np.array([b]))
    act = ActQuant("iospot", 4, signed, np.zeros(len(mids) + 1, np.int64), 0,
                   np.array(mids), thetas(mids), "sm")
    t = accumulator_thresholds(rq, act, F, relu)
    acc = np.array(acc + [0, I32, -I32], dtype=np.int64)
    if m != 0:  # probe every decision boundary: the accumulators next to each crossing
        for mid in mids:
            for target in (mid * 2**F, -mid * 2**F, 1 - mid * 2**F):
                a0 = int(np.clip(np.floor((target - b) / m), -I32, I32))
                acc = np.concatenate([acc, np.clip(np.arange(a0 - 2, a0 + 3), -I32, I32)])
    want_c, want_n = codes_exact(acc, m, b, mids, relu, signed)
    got_c, got_n = codes_by_thresholds(acc, t.flip[0], t.up[0], None if t.wn is None else t.wn[0])
    np.testing.assert_array_equal(got_c, want_c)
    np.testing.assert_array_equal(got_n, want_n)


@settings(max_examples=150, deadline=None)
@given(
    m=st.floats(2.0**-6, 2.0**12, allow_nan=False).map(lambda v: float(np.float32(v))),
    neg=st.booleans(), b=st.floats(-(2.0**24), 2.0**24).map(lambda v: float(np.float32(v))),
    mids=st.lists(st.integers(1, 2**22), min_size=1, max_size=15, unique=True),
    relu=st.booleans(), signed=st.booleans(),
    acc=st.lists(st.integers(-(2**15), 2**15), min_size=1, max_size=32),
)
def test_thresholds_give_the_codes_of_the_requantized_tensor(m, neg, b, mids, relu, signed,
                                                             acc) -> None:
    """A float32 scale is held exactly (24-bit M) and B is floored, so the fixed tensor is
    ``floor(m * acc + b)`` and its codes are the thresholds' codes, one for one."""
    mids = np.array(sorted(mids), dtype=np.float64) * 2.0**-F * 0.75  # on and off the grid
    m = -m if neg else m
    rq = make_requant(np.array([m]), np.array([b]))
    act = ActQuant("iospot", 4, signed, np.zeros(len(mids) + 1, np.int64), 0, mids,
                   thetas(mids), "sm")
    t = accumulator_thresholds(rq, act, F, relu)
    acc = np.array(acc + [0], dtype=np.int64)
    for mid in thetas(mids):  # the accumulators next to each crossing, both signs
        for target in (mid, -mid, 1 - mid):
            a0 = int(np.floor((target - b) / m))
            acc = np.concatenate([acc, np.arange(a0 - 2, a0 + 3)])
    y = requant_np(acc[None, :], rq, axis=0)[0]
    assert np.array_equal(y, [(Fraction(m) * int(a) + Fraction(b)).__floor__() for a in acc])
    if relu:
        y = np.maximum(y, 0)
    want = quantize_fixed(y, act)
    got_c, got_n = codes_by_thresholds(acc, t.flip[0], t.up[0], None if t.wn is None else t.wn[0])
    np.testing.assert_array_equal(got_c + got_n * 2**act.kbits, want)


def test_a_value_half_a_unit_below_a_midpoint_keeps_the_lower_code() -> None:
    """The 2^-F fixed point rounded such a value up onto the threshold (DeepShift on digits:
    0.26562482 against the midpoint 17/64 took the larger code); on the accumulator it
    does not."""
    mid = 17 / 64
    m = 2.0**-10 * 2**F  # one accumulator unit is 2^-10 in real units
    b = -0.4 * 2.0**-20 * 2**F  # 0.4 of a fixed-point unit below the grid
    act = ActQuant("iospot", 4, True, np.zeros(2, np.int64), 0, np.array([mid]),
                   np.array([int(mid * 2**F)]), "sm")
    t = accumulator_thresholds(make_requant(np.array([m]), np.array([b])), act, F, True)
    acc = np.array([272, 273])  # 272 / 1024 = 17/64: y = mid - 0.4 unit, then mid + 0.6 unit
    codes, _ = codes_by_thresholds(acc, t.flip[0], t.up[0], None)
    assert codes.tolist() == [0, 1]
