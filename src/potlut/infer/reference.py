"""The integer reference: the program of :mod:`potlut.infer.program` in plain int64 numpy.

No tables, no fusion, no kernels: products are int64 multiplications of the signed code
values (``±value[code]``), rounded per product by the layer's table shift exactly as the
P-LUT entries are, summed; every other step is the written formula. The fast engine must
equal this element for element.
"""

from __future__ import annotations

import numpy as np

from potlut.infer.plut import INT32_MAX
from potlut.infer.program import (
    ActQuant,
    Add,
    Affine,
    Cat,
    InputQuant,
    Layer,
    Pool,
    Program,
    Quantize,
    Relu,
    Requant,
    Reshape,
    Shortcut,
)


def _i64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.int64)


def _sat(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -INT32_MAX, INT32_MAX)


def encode_codes(code: np.ndarray, neg: np.ndarray, act: ActQuant) -> np.ndarray:
    """Codes in the buffer format: ``neg << k | code`` (IOS-PoT) or ``±code`` (fixed)."""
    code = _i64(code)
    if act.fmt == "sm":
        return code + neg.astype(np.int64) * 2**act.kbits
    return np.where(neg, -code, code)


def decode_values(codes: np.ndarray, act: ActQuant) -> np.ndarray:
    """Signed integer values ``±value[code]`` of a codes buffer (int64)."""
    if act.fmt == "sm":
        code, neg = codes % 2**act.kbits, codes >= 2**act.kbits
    else:
        code, neg = np.abs(codes), codes < 0
    mag = _i64(act.values)[code]
    return np.where(neg, -mag, mag)


def quantize_float(x: np.ndarray, act: ActQuant) -> np.ndarray:
    """Float input -> codes: nearest level (ties to the larger), as the float quantizer."""
    x = np.asarray(x, dtype=np.float64)
    mag = np.abs(x) if act.signed else np.maximum(x, 0.0)
    code = np.searchsorted(np.asarray(act.mids, dtype=np.float64), mag, side="right")
    neg = (x < 0) & (code > 0) if act.signed else np.zeros(code.shape, dtype=bool)
    return encode_codes(code, neg, act)


def quantize_fixed(y: np.ndarray, act: ActQuant) -> np.ndarray:
    """Fixed tensor -> codes: count the integer thresholds at or below ``|y|``."""
    mag = np.abs(y) if act.signed else np.maximum(y, 0)
    code = np.searchsorted(_i64(act.thresholds), mag, side="right")
    neg = (y < 0) & (code > 0) if act.signed else np.zeros(code.shape, dtype=bool)
    return encode_codes(code, neg, act)


def codes_from_accumulator(acc: np.ndarray, layer: Layer) -> np.ndarray:
    """Codes of ``[N, O, L]`` accumulators by the layer's :class:`AccThresholds`."""
    t = layer.acc_thr
    a = np.where(t.flip.astype(bool)[None, :, None], -acc, acc)
    up = t.up.astype(np.int64)[None, :, None, :]
    pos = (a[..., None] > up).sum(axis=-1)
    neg = ((a[..., None] <= t.wn.astype(np.int64)[None, :, None, :]).sum(axis=-1)
           if t.wn is not None else np.zeros_like(pos))
    return encode_codes(pos + neg, neg > 0, layer.out_act)


def requant(x: np.ndarray, rq: Requant) -> np.ndarray:
    """``sat(floor((x * M + B) / 2^r))`` per channel (axis 1)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    M, B = _i64(rq.M).reshape(shape), _i64(rq.B).reshape(shape)
    d = (np.int64(2) ** _i64(rq.r)).reshape(shape)
    return _sat((x * M + B) // d)


def im2col(a: np.ndarray, kernel, stride, padding, dilation) -> np.ndarray:
    """``[N, C, H, W] -> [N, C*kh*kw, OH*OW]`` (int64, zero padding)."""
    N, C, H, W = a.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    p = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=a.dtype)
    p[:, :, ph:ph + H, pw:pw + W] = a
    cols = []
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            cols.append(p[:, :, r0:r0 + sh * (OH - 1) + 1:sh, c0:c0 + sw * (OW - 1) + 1:sw])
    return np.stack(cols, axis=2).reshape(N, C * kh * kw, OH * OW)


def int_matmul(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``w @ x`` of int64 arrays, exactly. Through float64 (BLAS) when every product and
    partial sum is an integer below 2^53, where float64 arithmetic is exact; else int64."""
    bound = int(np.abs(w).max(initial=0)) * int(np.abs(x).max(initial=0)) * w.shape[-1]
    if bound < 2**53:
        return np.rint(w.astype(np.float64) @ x.astype(np.float64)).astype(np.int64)
    return w @ x


def accumulate(layer: Layer, codes: np.ndarray) -> np.ndarray:
    """The layer's int32 accumulators ``[N, O, OH*OW]``: sum of rounded products."""
    a = decode_values(codes, layer.act)
    if layer.op == "linear":
        a = a.reshape(a.shape[0], -1, 1, 1)
    w = _i64(layer.weight_ints())  # [O, Cg, kh, kw]
    n_out, G = w.shape[0], layer.groups
    Cg, Og = a.shape[1] // G, n_out // G
    shift = layer.plut.shift if layer.plut is not None else 0
    accs = []
    for g in range(G):
        cols = im2col(a[:, g * Cg:(g + 1) * Cg], layer.kernel, layer.stride, layer.padding,
                      layer.dilation)
        wg = w[g * Og:(g + 1) * Og].reshape(Og, -1)
        if shift == 0:
            accs.append(int_matmul(wg, cols))
        else:  # every product rounded on its own: sign * round_half_up(|w| * |a| / 2^shift)
            half = 2 ** (shift - 1)
            a_abs, a_sgn = np.abs(cols), np.sign(cols)
            per_o = []
            for o in range(Og):
                t = (np.abs(wg[o])[None, :, None] * a_abs + half) >> shift
                per_o.append((t * a_sgn * np.sign(wg[o])[None, :, None]).sum(axis=1))
            accs.append(np.stack(per_o, axis=1))
    acc = np.concatenate(accs, axis=1)
    if acc.size and int(np.abs(acc).max()) > INT32_MAX:
        raise AssertionError(f"layer {layer.module}: accumulator left int32")  # by design
    return acc


def _pool(x: np.ndarray, st: Pool) -> np.ndarray:
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = st.kernel, st.stride, st.padding, st.dilation
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    fill = 0 if st.kind == "avg" else -(2**62)
    p = np.full((N, C, H + 2 * ph, W + 2 * pw), fill, dtype=np.int64)
    p[:, :, ph:ph + H, pw:pw + W] = x
    wins = [p[:, :, i * dh:i * dh + sh * (OH - 1) + 1:sh, j * dw:j * dw + sw * (OW - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    stack = np.stack(wins, axis=0)
    if st.kind == "max":
        return stack.max(axis=0)
    d = st.divisor or kh * kw
    return stack.sum(axis=0) // d  # floor: a pooled value >= theta exactly when its mean is


def _shortcut(x: np.ndarray, st: Shortcut) -> np.ndarray:
    if st.stride > 1:
        x = x[:, :, ::st.stride, ::st.stride]
    before, after = st.pad // 2, st.pad - st.pad // 2
    return np.pad(x, ((0, 0), (before, after), (0, 0), (0, 0)))


def run_reference(prog: Program, x: np.ndarray, keep: bool = False,
                  accumulate=accumulate) -> dict[str, np.ndarray] | np.ndarray:
    """Run ``prog`` on float images ``x`` ``[N, C, H, W]``; int64 logits (``[N, ...]``).

    ``x`` is anything ``np.asarray`` takes (a CPU torch tensor too). With ``keep`` returns
    every buffer (codes and fixed tensors) by name. ``accumulate`` computes a layer's
    accumulators (the bitwise path of :mod:`potlut.infer.bitwise` passes its own).
    """
    x = np.asarray(x, dtype=np.float32)
    N = x.shape[0]
    env: dict[str, np.ndarray] = {"x_float": x}
    for st in prog.steps:
        if isinstance(st, InputQuant):
            env[st.dst] = quantize_float(x, st.act)
        elif isinstance(st, Quantize):
            env[st.dst] = quantize_fixed(env[st.src], st.act)
        elif isinstance(st, Layer):
            acc = accumulate(st, env[st.src])  # [N, O, L]
            if st.acc_thr is not None:  # only the next layer's codes, decided on acc
                env[st.out_codes] = codes_from_accumulator(acc, st).reshape(N, *st.out_shape)
                continue
            y = requant(acc, st.requant).reshape(N, *st.out_shape)
            if st.residual is not None:
                y = _sat(y + env[st.residual])
            if st.relu:
                y = np.maximum(y, 0)
            if st.out_fixed is not None:
                env[st.out_fixed] = y
            if st.out_codes is not None:
                env[st.out_codes] = quantize_fixed(y, st.out_act)
        elif isinstance(st, Affine):
            env[st.dst] = requant(env[st.src], st.requant)
        elif isinstance(st, Relu):
            env[st.dst] = np.maximum(env[st.src], 0)
        elif isinstance(st, Add):
            env[st.dst] = _sat(env[st.a] + env[st.b])
        elif isinstance(st, Pool):
            env[st.dst] = _pool(env[st.src], st)
        elif isinstance(st, Shortcut):
            env[st.dst] = _shortcut(env[st.src], st)
        elif isinstance(st, Reshape):
            env[st.dst] = env[st.src].reshape(N, *st.shape)
        elif isinstance(st, Cat):
            env[st.dst] = np.concatenate([env[s] for s in st.srcs], axis=st.dim)
        else:  # pragma: no cover - every step type is handled above
            raise TypeError(type(st).__name__)
    if keep:
        return env
    outs = [env[o] for o in prog.outputs]
    return outs[0] if len(outs) == 1 else np.concatenate([o.reshape(N, -1) for o in outs], axis=1)
