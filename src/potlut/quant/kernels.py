"""Fused CPU kernels for the IOS-PoT and fixed-point fake quantizers (numba).

On CPU, QAT spends its extra time in elementwise passes over activations: the torch
formulation needs ~8 passes forward and ~5 backward over every quantized tensor. These
kernels do one pass each way: forward writes ``q``; backward reads ``x`` and ``q`` (both
kept alive anyway, by ReLU and by the convolution), writes the STE gradient and reduces
the clipping gradient. Results equal the torch path exactly for ``q`` and ``grad_x`` (tests check
it); ``grad_alpha`` differs only by float summation order.

Used for contiguous float32 CPU tensors when numba imports; everything else (CUDA,
other dtypes, no numba) takes the torch path in :mod:`potlut.quant.iospot`.
"""

from __future__ import annotations

import math

import numpy as np

try:  # numba is a dependency, but the torch path must keep working without it
    import numba
    from numba import njit, prange

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    AVAILABLE = False

KIND_POT, KIND_UNIFORM = 0, 1


_SIGN = np.int32(-(1 << 31))  # float32 sign bit
_ABS = np.int32(0x7FFFFFFF)  # everything but the sign
_EXP = np.int32(0x7F800000)  # the exponent field
_HALF_MANT = np.int32(1 << 22)  # half of the mantissa range


def _f32_bits(v: float) -> np.int32:
    return np.array([v], dtype=np.float32).view(np.int32)[0]


if AVAILABLE:

    @njit(parallel=True, cache=True)
    def _pot_forward(xi, qi, lo, hi, zero_below, signed):  # pragma: no cover - compiled
        """On float32 bit patterns: positive floats order like their int32 bits, so clamp
        to [smallest level, alpha] in ints; adding half the mantissa range and masking
        the mantissa rounds to the nearest power of two, ties to the larger."""
        for i in prange(xi.size):
            b = xi[i]
            neg = b < 0
            m = b & _ABS
            if (neg and not signed) or m < zero_below:
                qi[i] = 0
            else:
                m = min(max(m, lo), hi)
                r = (m + _HALF_MANT) & _EXP
                qi[i] = (r | _SIGN) if neg else r

    @njit(parallel=True, cache=True)
    def _uniform_forward(x, out, alpha, step, top, signed):  # pragma: no cover - compiled
        for i in prange(x.size):
            v = x[i]
            m = abs(v) if signed else max(v, 0.0)
            j = min(math.floor(min(m, alpha) / step + 0.5), top)
            out[i] = -j * step if (signed and v < 0) else j * step

    @njit(parallel=True, cache=True)
    def _backward(x, q, g, gx, alpha, signed):  # pragma: no cover - compiled
        acc = 0.0
        for i in prange(x.size):
            v = x[i]
            inside = abs(v) <= alpha if signed else (v >= 0 and v <= alpha)
            if inside:
                gx[i] = g[i]
                acc += g[i] * (q[i] - v)
            else:
                gx[i] = 0.0
                acc += g[i] * q[i]
        return acc / alpha


_threads_ready = False


def _follow_torch_threads() -> None:
    """Run numba's parallel loops on as many threads as torch uses, and keep torch's count.

    numba's OpenMP layer shares the OpenMP runtime with torch, and starting it resets the
    runtime's thread count: left alone, the first quantizer call silently undid a user's
    ``torch.set_num_threads(1)``. So start it here, put torch's count back, and match it.
    """
    global _threads_ready
    import torch

    n = torch.get_num_threads()
    if not _threads_ready:
        numba.get_num_threads()  # starts the threading layer
        torch.set_num_threads(n)
        _threads_ready = True
    want = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)


def forward(x: np.ndarray, alpha: float, param: float, kind: int, signed: bool) -> np.ndarray:
    """Fake-quantized copy of the flat float32 array ``x``; ``param``: smallest level or step."""
    _follow_torch_threads()
    out = np.empty_like(x)
    if kind == KIND_POT:
        lo, hi = _f32_bits(param), _f32_bits(alpha)
        _pot_forward(x.view(np.int32), out.view(np.int32), lo, hi, _f32_bits(param / 2), signed)
    else:
        _uniform_forward(x, out, np.float32(alpha), np.float32(param),
                         np.float32(round(alpha / param) - 1), signed)
    return out


def backward(
    x: np.ndarray, q: np.ndarray, g: np.ndarray, alpha: float, signed: bool
) -> tuple[np.ndarray, float]:
    """(grad_x, grad_alpha) from flat float32 ``x``, its quantized ``q`` and upstream ``g``."""
    _follow_torch_threads()
    gx = np.empty_like(x)
    ga = _backward(x, q, g, gx, np.float32(alpha), signed)
    return gx, float(ga)
