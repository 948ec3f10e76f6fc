"""Accumulator thresholds are exactly requantization + projection (property test)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from potlut.infer.engine import accumulator_thresholds
from potlut.infer.program import ActQuant, Requant, make_requant

I32 = 2**31 - 1


def codes_by_formula(acc, M, B, r, thr, relu, signed):
    y = np.clip((acc.astype(np.int64) * M + B) >> r, -I32, I32)
    if relu:
        y = np.maximum(y, 0)
    mag = np.abs(y) if signed else np.maximum(y, 0)
    c = np.searchsorted(thr, mag, side="right")
    neg = (y < 0) & (c > 0) & signed
    return c, neg


def codes_by_thresholds(acc, flip, up, wn):
    a = np.where(flip, -acc.astype(np.int64), acc)
    cp = (a[:, None] > up[None, :]).sum(1)
    cn = (a[:, None] <= wn[None, :]).sum(1) if wn is not None else np.zeros_like(cp)
    return cp + cn, cn > 0


@settings(max_examples=300, deadline=None)
@given(
    m=st.one_of(st.just(0.0), st.floats(-1e3, 1e3, allow_nan=False),
                st.sampled_from([2.0**-20, 2.0**-3, 1.0, 8.0])),
    b=st.floats(-(2.0**34), 2.0**34, allow_nan=False),
    thr=st.lists(st.integers(1, 2**31), min_size=1, max_size=15, unique=True),
    relu=st.booleans(), signed=st.booleans(),
    acc=st.lists(st.integers(-I32, I32), min_size=1, max_size=64),
)
def test_thresholds_match_the_formula(m, b, thr, relu, signed, acc) -> None:
    rq: Requant = make_requant(np.array([m]), np.array([b]))
    thr_a = np.array(sorted(thr), dtype=np.int64)
    act = ActQuant("iospot", 4, signed, np.zeros(len(thr) + 1, np.int64), 0,
                   np.zeros(len(thr)), thr_a, "sm")
    flip, up, wn = accumulator_thresholds(rq, act, relu)
    acc = np.array(acc + [0, I32, -I32], dtype=np.int64)
    # probe around every threshold crossing too
    M, B, r = int(rq.M[0]), int(rq.B[0]), int(rq.r[0])
    if M:
        for t in thr_a:
            for target in (int(t), 1 - int(t)):
                a0 = (target * 2**r - B) // M
                acc = np.concatenate([acc, np.clip(np.arange(a0 - 2, a0 + 3), -I32, I32)])
    want_c, want_n = codes_by_formula(acc, M, B, r, thr_a, relu, signed)
    got_c, got_n = codes_by_thresholds(acc, flip[0], up[0], None if wn is None else wn[0])
    np.testing.assert_array_equal(got_c, want_c)
    np.testing.assert_array_equal(got_n, want_n)
