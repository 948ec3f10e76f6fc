"""numba kernels: the portable fast path (and the fallback when no C compiler is present).

One call runs a whole fused layer for a batch: im2col of the input codes, the P-LUT
gather loop (one table read and one add per product, zero weights skipped) or the int8
multiply-accumulate, then requantization, residual add, ReLU and projection onto the
next layer's codes. Semantics are those of :mod:`potlut.infer.reference`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

INT32_MAX = 2**31 - 1


@njit(cache=True, inline="always")
def _count_le(thr, mag):
    """Number of thresholds <= mag (thresholds ascending): binary search."""
    lo, hi = 0, thr.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if thr[mid] <= mag:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def _code(v, thr, fmt, kbits, signed):
    """One int fixed value -> its code (``fmt`` 0: sign-magnitude, 1: signed value)."""
    if signed:
        mag = -v if v < 0 else v
    else:
        mag = v if v > 0 else 0
    c = _count_le(thr, mag)
    neg = signed and v < 0 and c > 0
    if fmt == 0:
        return c | ((1 << kbits) if neg else 0)
    return -c if neg else c


@njit(cache=True, inline="always")
def _epilogue(v, o, M, B, R, res, has_res, relu):
    y = (np.int64(v) * M[o] + B[o]) >> R[o]
    if y > INT32_MAX:
        y = INT32_MAX
    elif y < -INT32_MAX:
        y = -INT32_MAX
    if has_res:
        y += res
        if y > INT32_MAX:
            y = INT32_MAX
        elif y < -INT32_MAX:
            y = -INT32_MAX
    if relu and y < 0:
        y = 0
    return y


@njit(cache=True)
def quantize_fixed(y, out, thr, fmt, kbits, signed):
    """int32 fixed tensor -> codes (``fmt`` 0: sign-magnitude uint8, 1: int16 value)."""
    yf = y.reshape(-1)
    of = out.reshape(-1)
    for i in range(yf.shape[0]):
        of[i] = _code(np.int64(yf[i]), thr, fmt, kbits, signed)


@njit(cache=True)
def _im2col(x, n, g, Cg, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, cols):
    k = 0
    for c in range(g * Cg, (g + 1) * Cg):
        for i in range(KH):
            for j in range(KW):
                p = 0
                for oy in range(OH):
                    iy = oy * SH - PH + i * DH
                    for ox in range(OW):
                        ix = ox * SW - PW + j * DW
                        if 0 <= iy < H and 0 <= ix < W:
                            cols[k, p] = x[n, c, iy, ix]
                        else:
                            cols[k, p] = 0
                        p += 1
                k += 1


@njit(cache=True, inline="always")
def _code_acc(v, o, flip, up, wn, has_wn, fmt, kbits):
    """Codes straight from the accumulator (:class:`potlut.infer.program.AccThresholds`)."""
    a = -np.int64(v) if flip[o] else np.int64(v)
    cp = 0
    for j in range(up.shape[1]):
        if a > up[o, j]:
            cp += 1
    cn = 0
    if has_wn:
        for j in range(wn.shape[1]):
            if a <= wn[o, j]:
                cn += 1
    if fmt == 0:
        return (cp + cn) | ((1 << kbits) if cn > 0 else 0)
    return cp - cn


@njit(cache=True)
def conv_layer(x, geo, mode, wq, nz_k, nz_off, rows, M, B, R,
               res, has_res, relu, out_y, has_y, out_c, code_fmt, thr, kbits, signed,
               cols, acc, acc_thr, flip, up, wn, has_wn):
    """One fused layer over the batch.

    ``geo`` = (N, C, H, W, O, G, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW). ``mode`` 0: P-LUT
    (``wq`` signed weight codes ``[O, K]``, ``rows[sw, sa]`` the signed table); 1: int8
    (``wq`` int16 weight values). ``nz_k[nz_off[o]:nz_off[o+1]]`` lists the non-zero
    weights of output channel ``o``. ``code_fmt`` -1: no code output. ``acc_thr``: the
    codes come from the accumulator by ``flip``/``up``/``wn`` (no requantization).
    """
    N, C, H, W, CO, G, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW = geo
    Cg, Og = C // G, CO // G
    P = OH * OW
    for n in range(N):
        for g in range(G):
            _im2col(x, n, g, Cg, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, cols)
            for oo in range(Og):
                o = g * Og + oo
                for p in range(P):
                    acc[p] = 0
                for t in range(nz_off[o], nz_off[o + 1]):
                    k = nz_k[t]
                    if mode == 0:
                        row = rows[wq[o, k]]
                        for p in range(P):
                            acc[p] += row[cols[k, p]]
                    else:
                        wv = np.int32(wq[o, k])
                        for p in range(P):
                            acc[p] += wv * np.int32(cols[k, p])
                if acc_thr:
                    for p in range(P):
                        out_c[n, o, p] = _code_acc(acc[p], o, flip, up, wn, has_wn, code_fmt,
                                                   kbits)
                    continue
                for p in range(P):
                    r = np.int64(res[n, o, p]) if has_res else np.int64(0)
                    y = _epilogue(acc[p], o, M, B, R, r, has_res, relu)
                    if has_y:
                        out_y[n, o, p] = y
                    if code_fmt >= 0:
                        out_c[n, o, p] = _code(y, thr, code_fmt, kbits, signed)
