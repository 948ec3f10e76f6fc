"""Bitwise inference of least-squares binary layers (LS-1, LS-2, LS-T): XNOR/AND + popcount.

Pouransari et al. 2020 (Sec. 4): with weights and activations sums of scaled ``{-1, +1}``
planes, a dot product is ``sum_kj c_k d_j <s_k, t_j>`` and ``<s, t>`` over the positions of a
mask ``M`` (non-zero weights AND non-zero activations: LS-T zeros, ReLU zeros, zero padding)
is ``popcount(M) - 2 popcount((s XOR t) AND M)`` on bits packed 64 to a word.

A magnitude codebook with one non-zero level ``v`` (LS-1, LS-T, LS-1 activations) is one
plane, ``2v * sign``; two non-zero levels ``a < b`` (LS-2) are two planes, ``(a + b) * sign``
and ``(b - a) * sign * (+1 at b, -1 at a)``. Coefficients are doubled so that both are
integers whatever the parity of ``a + b``: the sum is 4 times the dot product, divided back
exactly. The integers are those of the program (:mod:`potlut.infer.program`), so every
accumulator equals :func:`potlut.infer.reference.accumulate` bit for bit; a layer whose
P-LUT rounds products (a table shift) has no bitwise form and is refused.

Two implementations of the same sums: NumPy (``np.bitwise_count``) and a C kernel
(``kernels/bitwise_popcount.c``, ``__builtin_popcountll``), compiled at first use like the
engine's C backend; ``backend="auto"`` takes C where a compiler exists.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from potlut import schemes
from potlut.infer.plut import UnsupportedModelError
from potlut.infer.program import Layer, Program
from potlut.infer.reference import accumulate as reference_accumulate
from potlut.infer.reference import decode_values, im2col, run_reference


def planes(values: np.ndarray, mag: np.ndarray, neg: np.ndarray,
           where: str) -> tuple[list[int], list[np.ndarray], np.ndarray]:
    """``(coefs, sign_planes, mask)`` with ``2 * ±values[code] == sum c_k (1 - 2 s_k)`` on
    the mask (``mag`` are the magnitudes ``values[code]``; sign bits 1 stand for -1)."""
    levels = sorted(int(v) for v in np.unique(values) if v > 0)
    mask = mag > 0
    if len(levels) == 1:
        return [2 * levels[0]], [neg & mask], mask
    if len(levels) == 2:
        a, b = levels
        return [a + b, b - a], [neg & mask, (neg ^ (mag == a)) & mask], mask
    raise UnsupportedModelError(f"{where}: {len(levels)} non-zero levels have no bitwise form "
                                "(one or two scaled binary planes)")


def pack(bits: np.ndarray) -> np.ndarray:
    """Pack booleans along the last axis into uint64 words (little-endian bit order)."""
    k = bits.shape[-1]
    words = -(-k // 64)
    pad = np.zeros((*bits.shape[:-1], words * 64 - k), dtype=bool)
    packed = np.packbits(np.concatenate([bits, pad], axis=-1), axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view(np.uint64)


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of every uint64 word summed over the last axis (int64)."""
    return np.bitwise_count(words).sum(axis=-1, dtype=np.int64)


def is_bitwise(layer: Layer) -> bool:
    """Both of the layer's codebooks are of a scheme with scaled binary planes."""
    return layer.bitwise


C_SOURCE = Path(__file__).parent / "kernels" / "bitwise_popcount.c"
C_FLAGS = ["-O3", "-std=c11", "-shared", "-fPIC", "-mpopcnt"]


@functools.lru_cache(maxsize=1)
def c_kernel() -> Any | None:
    """The compiled ``bitwise_dot`` (ctypes), or None where no C compiler works."""
    from potlut.infer.kernels.cbackend import _compiler, cache_dir

    cc = _compiler()
    if cc is None or os.environ.get("POTLUT_NO_C") == "1":
        return None
    src = C_SOURCE.read_bytes()
    tag = hashlib.sha256(src + " ".join([cc, *C_FLAGS]).encode()).hexdigest()[:16]
    out = cache_dir() / f"bitwise_popcount_{tag}.so"
    try:
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
            os.close(fd)
            flags = C_FLAGS
            res = subprocess.run([cc, *flags, str(C_SOURCE), "-o", tmp], capture_output=True)
            if res.returncode != 0:  # a CPU without POPCNT flag support: portable popcount
                flags = [f for f in C_FLAGS if f != "-mpopcnt"]
                subprocess.run([cc, *flags, str(C_SOURCE), "-o", tmp], check=True,
                               capture_output=True)
            os.replace(tmp, out)
        lib = ctypes.CDLL(str(out))
    except (OSError, subprocess.CalledProcessError):
        return None
    fn = lib.bitwise_dot
    fn.restype = None
    fn.argtypes = [ctypes.c_int64] * 6 + [ctypes.c_void_p] * 7
    return fn


def _dot_numpy(wm, ws, cw, am, as_, ca) -> np.ndarray:
    """``[N, O, L]`` sums from packed masks/signs (``wm [O, W]``, ``am [N, L, W]``)."""
    mask = wm[None, :, None, :] & am[:, None, :, :]  # [N, O, L, words]
    total = popcount(mask)
    acc4 = np.zeros(total.shape, dtype=np.int64)
    for c, s in zip(cw, ws, strict=True):
        for d, t in zip(ca, as_, strict=True):
            differ = popcount((s[None, :, None, :] ^ t[:, None, :, :]) & mask)
            acc4 += c * d * (total - 2 * differ)
    assert not np.any(acc4 % 4), "doubled plane coefficients must sum to 4 x the product"
    return acc4 // 4


def _dot_c(fn, wm, ws, cw, am, as_, ca) -> np.ndarray:
    N, L, W = am.shape
    n_out = wm.shape[0]
    wsign = np.ascontiguousarray(np.stack(ws))
    asign = np.ascontiguousarray(np.stack(as_))
    cwa, caa = np.asarray(cw, np.int64), np.asarray(ca, np.int64)
    wm, am = np.ascontiguousarray(wm), np.ascontiguousarray(am)
    acc = np.zeros((N, n_out, L), dtype=np.int64)
    ptr = [a.ctypes.data for a in (wm, wsign, cwa, am, asign, caa, acc)]
    fn(N, n_out, L, W, len(cw), len(ca), *ptr)
    return acc


def accumulate(layer: Layer, codes: np.ndarray, backend: str = "auto") -> np.ndarray:
    """The layer's accumulators ``[N, O, L]`` by XNOR/AND + popcount (equal to the reference).

    ``backend``: ``"numpy"``, ``"c"`` (the popcount kernel) or ``"auto"`` (C if it builds).
    """
    if layer.plut is not None and layer.plut.shift:
        raise UnsupportedModelError(f"layer {layer.module}: its P-LUT rounds products "
                                    f"(shift {layer.plut.shift}); no bitwise form")
    fn = c_kernel() if backend in ("auto", "c") else None
    if backend == "c" and fn is None:
        raise UnsupportedModelError("the C popcount kernel could not be built (no C compiler)")
    a = decode_values(codes, layer.act)
    if layer.op == "linear":
        a = a.reshape(a.shape[0], -1, 1, 1)
    n_out, G = layer.out_channels, layer.groups
    Cg, Og = a.shape[1] // G, n_out // G
    w_mag = layer.w_values[layer.w_codes.astype(np.int64)].reshape(n_out, -1)
    w_neg = layer.w_negative.reshape(n_out, -1)
    accs = []
    for g in range(G):
        cols = im2col(a[:, g * Cg:(g + 1) * Cg], layer.kernel, layer.stride, layer.padding,
                      layer.dilation).transpose(0, 2, 1)  # [N, L, K]
        cw, sw, mw = planes(layer.w_values, w_mag[g * Og:(g + 1) * Og],
                            w_neg[g * Og:(g + 1) * Og], f"layer {layer.module} weights")
        ca, sa, ma = planes(layer.act.values, np.abs(cols), cols < 0,
                            f"layer {layer.module} activations")
        packed = (pack(mw), [pack(s) for s in sw], cw, pack(ma), [pack(t) for t in sa], ca)
        accs.append(_dot_numpy(*packed) if fn is None else _dot_c(fn, *packed))
    return np.concatenate(accs, axis=1)


def run_bitwise(prog: Program, x: Any, backend: str = "auto") -> np.ndarray:
    """Run ``prog`` on float images with every LS layer by popcount (others as the reference)."""
    def acc(layer: Layer, codes: np.ndarray) -> np.ndarray:
        if is_bitwise(layer):
            return accumulate(layer, codes, backend)
        return reference_accumulate(layer, codes)

    return run_reference(prog, x, accumulate=acc)


def bitwise_layers(prog: Program) -> list[str]:
    """Modules of the layers the bitwise path runs by popcount."""
    return [st.module for st in prog.layers() if is_bitwise(st)]


def scheme_is_bitwise(name: str) -> bool:
    """Whether scheme ``name`` declares scaled binary planes (``Scheme.bitwise``)."""
    facts = schemes.lookup(name)
    return bool(facts is not None and facts.bitwise)
