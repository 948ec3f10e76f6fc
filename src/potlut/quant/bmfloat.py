"""BM-float: block minifloat, a shared exponent per block and few-bit minifloat elements.

Paper: Fox, Rasoulinezhad, Faraone, Boland, Leong, "A Block Minifloat Representation for
Training Deep Neural Networks", ICLR 2021.

Follows:
- §3 / Eq. (1)-(2): an element is a minifloat with ``e`` exponent and ``m`` mantissa bits
  (and a sign bit), with subnormals: ``2^(E - bias) (1 + M/2^m)`` for ``E >= 1`` and
  ``2^(1 - bias) M/2^m`` for ``E = 0``; no infinities or NaNs.
- Each block of elements shares an exponent bias, chosen from the block's largest
  magnitude so that it lands in the top binade (the shared exponent is the block's max
  exponent, §3.1); elements are rounded to nearest and saturate at the largest value.
- Formats by total bits (sign included): 3 -> (e, m) = (1, 1), 4 -> (2, 1), 5 -> (2, 2),
  6 -> (2, 3) (the paper's BM6), 7 -> (3, 3), 8 -> (4, 3) (BM8); 2 -> (1, 0).

Departures: the paper trains with BM for weights, activations and gradients and shares
the exponent over square tiles of the GEMM operands; here BM is a QAT fake quantizer of
weights and activations only (FP32 gradients, as for every scheme in the comparison),
with blocks of ``BLOCK`` consecutive elements along each row (weights: the flattened
filter of one output channel; activations: one sample's flattened features). An unsigned
tensor spends the sign bit on one more mantissa bit. Rounding ties go to the larger
level. No learnable parameter: the STE passes the gradient to the input unchanged.

Integer-only: no. Block exponents are computed from the data at run time and the
elements are floating point; the paper accumulates in wide (Kulisch) accumulators.
``export`` flattens the per-block scales into one codebook of the distinct magnitudes
(at most ``2^(b-1)`` times the number of distinct block exponents), so the stored form
is still a small codebook plus codes; ``side_bits`` counts the 8-bit shared exponents.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from potlut.errors import PotlutConfigError
from potlut.quant import registry
from potlut.quant.base import Exported, Quantizer

BLOCK = 64
SHARED_EXPONENT_BITS = 8
_FORMATS: dict[int, tuple[int, int]] = {
    2: (1, 0), 3: (1, 1), 4: (2, 1), 5: (2, 2), 6: (2, 3), 7: (3, 3), 8: (4, 3), 9: (4, 4),
}


def minifloat_format(bits: int, signed: bool = True) -> tuple[int, int]:
    """``(exponent bits, mantissa bits)`` of a ``bits``-bit element."""
    total = bits if signed else bits + 1
    if total not in _FORMATS or bits < 2:
        raise PotlutConfigError(f"BM-float supports 2..8 bits, got {bits}")
    return _FORMATS[total]


def minifloat_levels(e: int, m: int) -> torch.Tensor:
    """All non-negative values of an ``(e, m)`` minifloat with subnormals, top binade [1, 2)."""
    bias = 2**e - 1
    vals = {mm / 2**m * 2.0 ** (1 - bias) for mm in range(2**m)}
    for ee in range(1, 2**e):
        vals |= {(1 + mm / 2**m) * 2.0 ** (ee - bias) for mm in range(2**m)}
    return torch.tensor(sorted(vals), dtype=torch.float64)


def _blocks(x: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    """``x`` as (rows, n_blocks, block) with zero padding; returns the pad length."""
    rows = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
    pad = (-rows.shape[1]) % block
    if pad:
        rows = F.pad(rows, (0, pad))
    return rows.reshape(rows.shape[0], -1, block), pad


class BMFloatQuantizer(Quantizer):
    """Block minifloat fake quantizer (weights or activations), 2..8 bits."""

    scheme = "bmfloat"

    def __init__(self, bits: int = 4, signed: bool = True, block: int = BLOCK) -> None:
        super().__init__(int(bits))
        self.signed = signed
        self.block = int(block)
        self.e, self.m = minifloat_format(self.bits, signed)
        self.register_buffer("_levels", minifloat_levels(self.e, self.m).float(),
                             persistent=False)

    def levels(self) -> torch.Tensor:
        return self._levels.clone()

    def block_exponents(self, x: torch.Tensor) -> torch.Tensor:
        """Shared exponent ``f = floor(log2 max|x|)`` of every block (rows, n_blocks)."""
        xb, _ = _blocks(x.detach(), self.block)
        top = (xb.abs() if self.signed else xb.clamp_min(0)).amax(-1)
        return torch.floor(torch.log2(top.clamp_min(1e-30)))

    def _quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values, level indices, per-element scale) of ``x`` (no gradient)."""
        xd = x.detach()
        xb, pad = _blocks(xd, self.block)
        scale = torch.exp2(self.block_exponents(xd)).unsqueeze(-1).to(xd.dtype)
        mag = xb.abs() if self.signed else xb.clamp_min(0)
        lv = self._levels.to(xd.dtype)
        idx = torch.bucketize(mag / scale, (lv[1:] + lv[:-1]) / 2, right=True)
        q = lv[idx] * scale
        if self.signed:
            q = torch.where(xb < 0, -q, q)
        scale = scale.expand_as(xb)

        def unblock(t: torch.Tensor) -> torch.Tensor:
            t = t.reshape(t.shape[0], -1)
            return (t[:, : t.shape[1] - pad] if pad else t).reshape(x.shape)

        return unblock(q), unblock(idx), unblock(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            return x
        q, _, _ = self._quantize(x)
        return x + (q - x).detach()  # STE

    def side_bits(self, shape: tuple[int, ...]) -> int:
        """Storage of the shared exponents of a weight tensor of ``shape`` (blocks per row)."""
        rows = shape[0] if len(shape) > 1 else 1
        cols = math.prod(shape) // max(rows, 1)
        return rows * -(-cols // self.block) * SHARED_EXPONENT_BITS

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        xd = x.detach().double().cpu()
        q, _, _ = self._quantize(xd)
        book, codes = torch.unique(q.abs(), return_inverse=True)
        if book[0] != 0:  # keep code 0 for zero, as every other scheme does
            book = torch.cat([book.new_zeros(1), book])
            codes = codes + 1
        dtype = np.uint8 if len(book) <= 256 else np.uint16
        return Exported(
            scheme=self.scheme, bits=self.bits, codes=codes.numpy().astype(dtype),
            negative=(q < 0).numpy(), codebook=book.numpy(), exponent=None,
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, e={self.e}, m={self.m}, block={self.block}"


registry.register(
    "bmfloat",
    lambda bits, role, signed: BMFloatQuantizer(bits, signed=True if role == "weight" else signed),
)
