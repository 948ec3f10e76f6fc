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
- Formats by total bits (sign included), the paper's forward formats with 2 exponent bits
  where they exist: 8 -> (e, m) = (2, 5) (BM8), 6 -> (2, 3) (BM6), 7 -> (2, 4),
  5 -> (2, 2), 4 -> (2, 1), 3 -> (1, 1), 2 -> (1, 0). (The (4, 3) format is BM8's gradient
  format; gradients stay FP32 here, as for every scheme in the comparison.)
- Blocks as the authors' code: a weight, as the GEMM operand ``[C_out, C_in k k]``, shares
  one exponent per 48 x 48 tile; an activation one per sample (the fallback of the authors'
  code for operands it does not tile), so inference never mixes samples of a batch.

Departures: the paper trains with BM for weights, activations and gradients; here BM is a
QAT fake quantizer of weights and activations only (FP32 gradients). An unsigned tensor
spends the sign bit on one more mantissa bit. Rounding ties go to the larger level. No
learnable parameter: the STE passes the gradient to the input unchanged.

Cost accounting: ``side_bits`` charges the 8-bit shared exponents of the weights in the
weight size; the activations' per-sample exponent (8 bits per sample and layer, under
0.01 bit per activation on these models) is not charged to FIXOPS or bits.

Integer-only: no. Block exponents are computed from the data at run time and the
elements are floating point; the paper accumulates in wide (Kulisch) accumulators.
``export`` flattens the per-tile scales into one codebook of the distinct magnitudes
(at most ``2^(b-1)`` times the number of distinct tile exponents), so the stored form
is still a small codebook plus codes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from potlut.errors import PotlutConfigError
from potlut.quant import registry
from potlut.quant.base import Exported, Quantizer

TILE = 48  # weights: one shared exponent per TILE x TILE tile of the GEMM operand
SHARED_EXPONENT_BITS = 8
_FORMATS: dict[int, tuple[int, int]] = {
    2: (1, 0), 3: (1, 1), 4: (2, 1), 5: (2, 2), 6: (2, 3), 7: (2, 4), 8: (2, 5), 9: (2, 6),
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


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a 2-D matrix: one row per output channel (weights) or sample (activations)."""
    return x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)


def _tiles(rows: torch.Tensor, tile: int) -> torch.Tensor:
    """Max of ``rows`` over each ``tile x tile`` tile: ``[ceil(R / tile), ceil(C / tile)]``."""
    r, c = rows.shape
    p = F.pad(rows, (0, (-c) % tile, 0, (-r) % tile))
    return p.reshape(p.shape[0] // tile, tile, p.shape[1] // tile, tile).amax(dim=(1, 3))


class BMFloatQuantizer(Quantizer):
    """Block minifloat fake quantizer (weights or activations), 2..8 bits."""

    scheme = "bmfloat"

    def __init__(self, bits: int = 4, signed: bool = True, role: str = "weight",
                 tile: int = TILE) -> None:
        super().__init__(int(bits))
        self.signed = signed
        self.role = role
        self.tile = int(tile)
        self.e, self.m = minifloat_format(self.bits, signed)
        self.register_buffer("_levels", minifloat_levels(self.e, self.m).float(),
                             persistent=False)

    def levels(self) -> torch.Tensor:
        return self._levels.clone()

    def _mag(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs() if self.signed else x.clamp_min(0)

    def block_exponents(self, x: torch.Tensor) -> torch.Tensor:
        """Shared exponent ``f = floor(log2 max|x|)`` of every block: a weight's tiles
        ``[ceil(C_out / tile), ceil(rest / tile)]``, an activation's samples ``[N]``."""
        mag = self._mag(_rows(x.detach()))
        top = _tiles(mag, self.tile) if self.role == "weight" else mag.amax(1)
        return torch.floor(torch.log2(top.clamp_min(1e-30)))

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """The block scale ``2^f`` of every element, shaped like ``x``."""
        f = torch.exp2(self.block_exponents(x)).to(x.dtype)
        rows = _rows(x)
        if self.role == "weight":
            f = f.repeat_interleave(self.tile, 0).repeat_interleave(self.tile, 1)
            f = f[: rows.shape[0], : rows.shape[1]]
        else:
            f = f[:, None].expand_as(rows)
        return f.reshape(x.shape)

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The block-minifloat values of ``x`` (no gradient)."""
        xd = x.detach()
        scale = self._scale(xd)
        lv = self._levels.to(xd.dtype)
        idx = torch.bucketize(self._mag(xd) / scale, (lv[1:] + lv[:-1]) / 2, right=True)
        q = lv[idx] * scale
        return torch.where(xd < 0, -q, q) if self.signed else q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            return x
        q = self._quantize(x)
        return x + (q - x).detach()  # STE

    def side_bits(self, shape: tuple[int, ...]) -> int:
        """Storage of the shared exponents of a weight tensor of ``shape`` (one per tile)."""
        rows = shape[0] if len(shape) > 1 else 1
        cols = math.prod(shape) // max(rows, 1)
        return -(-rows // self.tile) * -(-cols // self.tile) * SHARED_EXPONENT_BITS

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        xd = x.detach().double().cpu()
        q = self._quantize(xd)
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
        return (f"bits={self.bits}, signed={self.signed}, role={self.role}, e={self.e}, "
                f"m={self.m}, tile={self.tile}")


registry.register(
    "bmfloat",
    lambda bits, role, signed: BMFloatQuantizer(
        bits, signed=True if role == "weight" else signed, role=role),
)
