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
"""

from __future__ import annotations

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


def accumulate(layer: Layer, codes: np.ndarray) -> np.ndarray:
    """The layer's accumulators ``[N, O, L]`` by XNOR/AND + popcount (equal to the reference)."""
    if layer.plut is not None and layer.plut.shift:
        raise UnsupportedModelError(f"layer {layer.module}: its P-LUT rounds products "
                                    f"(shift {layer.plut.shift}); no bitwise form")
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
        mask = pack(mw)[None, :, None, :] & pack(ma)[:, None, :, :]  # [N, O, L, words]
        total = popcount(mask)
        acc4 = np.zeros(total.shape, dtype=np.int64)
        for c, s in zip(cw, sw, strict=True):
            ps = pack(s)[None, :, None, :]
            for d, t in zip(ca, sa, strict=True):
                differ = popcount((ps ^ pack(t)[:, None, :, :]) & mask)
                acc4 += c * d * (total - 2 * differ)
        assert not np.any(acc4 % 4), "doubled plane coefficients must sum to 4 x the product"
        accs.append(acc4 // 4)
    return np.concatenate(accs, axis=1)


def _accumulate_any(layer: Layer, codes: np.ndarray) -> np.ndarray:
    return accumulate(layer, codes) if is_bitwise(layer) else reference_accumulate(layer, codes)


def run_bitwise(prog: Program, x: Any) -> np.ndarray:
    """Run ``prog`` on float images with every LS layer by popcount (others as the reference)."""
    return run_reference(prog, x, accumulate=_accumulate_any)


def bitwise_layers(prog: Program) -> list[str]:
    """Modules of the layers the bitwise path runs by popcount."""
    return [st.module for st in prog.layers() if is_bitwise(st)]


def scheme_is_bitwise(name: str) -> bool:
    """Whether scheme ``name`` declares scaled binary planes (``Scheme.bitwise``)."""
    facts = schemes.lookup(name)
    return bool(facts is not None and facts.bitwise)
