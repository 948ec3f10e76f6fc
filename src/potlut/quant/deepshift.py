"""DeepShift-Q: power-of-two weights with a ternary sign; 8-bit fixed-point activations.

Tables call it DeepShift-Q (it was labelled DeepShift-PS): the weights train as real
numbers rounded to powers of two in the forward pass, with the STE in weight space, which
is the paper's DeepShift-Q; DeepShift-PS trains the shift and sign tensors themselves.
The scheme name ``deepshift`` (command line, .potlut files) is unchanged.

Paper: Elhoushi, Chen, Shafiq, Tian, Li, "DeepShift: Towards Multiplication-Less Neural
Networks", CVPR Workshops 2021.

Follows:
- Eq. (2)/(6): a weight is ``s * 2^p`` with a ternary sign ``s in {-1, 0, +1}`` and an
  integer shift ``p`` rounded in the *log* domain (``p = round(log2 |w|)``), clamped to
  the shift range of the authors' code: ``p in [-(2^(b-1) - 2), 0]`` for ``b`` weight
  bits (one bit and the zero of the ternary sign spent on the sign), so ``b = 4`` gives
  ``{0, ±2^-6, ..., ±1}`` and ``b = 3`` gives ``{0, ±1/4, ±1/2, ±1}``.
- Activations are fixed point (the original keeps them at 16.16; the IOS-PoT paper's
  comparison runs DeepShift with 8-bit activations, which is what is used here): every
  activation quantizer of this scheme is 8-bit fixed point whatever ``bits`` asks for, so
  FIXOPS shows the ``b x 8``-bit cost of a DeepShift MAC.
- No weight normalization and no learnable weight scale (as the original).

Departures from DeepShift-Q as the authors' code runs it (all listed in docs/fairness.md):
the layer's single weight tensor carries sign and shift (``S = sign(w)``,
``P = log2 |w|``), as in Q; a weight's sign rounds to 0 when ``|w|`` is more than half a
shift (in the log domain) below the smallest shift (the original clamps it to the smallest
shift and has no zero: ``2^(b-1)`` shifts instead of ``2^(b-1) - 1`` plus zero); a
per-layer power-of-two offset ``2^e`` of the shift range is chosen once at calibration
(MSE-optimal; 0 in the original, whose un-normalized weights rarely exceed 1), a fixed
integer, not trained; the 8-bit activations are the project's fixed point with a learned
power-of-two clipping scale (the original: a fixed fixed-point format).

Integer-only: yes; weights are signed powers of two with a power-of-two layer offset and
activations are fixed point with a power-of-two step: a MAC is a shift and an add.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from potlut.quant import registry
from potlut.quant.base import Exported, Quantizer
from potlut.quant.iospot import UniformPoTQuantizer, check_bits

DEEPSHIFT_ACT_BITS = 8


def shift_range(bits: int) -> tuple[int, int]:
    """``(p_min, p_max)`` of the shift for ``bits`` weight bits (authors' code)."""
    return -(2 ** (bits - 1) - 2), 0


def deepshift_levels(bits: int) -> torch.Tensor:
    """Magnitudes at unit offset: ``{0} ∪ {2^p : p_min <= p <= 0}``, ascending."""
    lo, hi = shift_range(bits)
    return torch.tensor([0.0] + [2.0**p for p in range(lo, hi + 1)], dtype=torch.float64)


def _shift_codes(x: torch.Tensor, offset: int, bits: int) -> torch.Tensor:
    """Code 0 for zero, else ``p - p_min + 1``: log-domain rounding, clamped to the range."""
    lo, hi = shift_range(bits)
    mag = x.abs() / 2.0**offset
    p = torch.round(torch.log2(mag.clamp_min(1e-30)))
    code = (p.clamp(max=hi) - lo + 1).clamp_min(0)
    return torch.where(p < lo, torch.zeros_like(code), code).long()


class DeepShiftWeightQuantizer(Quantizer):
    """Signed power-of-two weights, log-domain rounding (DeepShift), 2..8 bits."""

    scheme = "deepshift"

    def __init__(self, bits: int = 4) -> None:
        super().__init__(check_bits(bits, 2, 8))
        self.register_buffer("offset", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("_levels", deepshift_levels(self.bits).float(), persistent=False)

    def levels(self) -> torch.Tensor:
        return self._levels.clone()

    def _quantize(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        code = _shift_codes(x.detach(), offset, self.bits)
        mag = self._levels.to(x.dtype)[code] * 2.0**offset
        return torch.where(x < 0, -mag, mag)

    def calibrate_from(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).double()
        if flat.numel() > 1 << 16:
            flat = flat[:: flat.numel() // (1 << 16)]
        top = float(flat.abs().max()) if flat.numel() else 0.0
        if not math.isfinite(top) or top <= 0:
            return
        centre = math.ceil(math.log2(top))
        best = min(
            range(centre - 3, centre + 2),
            key=lambda e: float(((self._quantize(flat, e) - flat) ** 2).mean()),
        )
        self.offset.fill_(best)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        q = self._quantize(x, int(self.offset))
        return x + (q - x).detach()  # STE

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        e = int(self.offset)
        xd = x.detach().double().cpu()
        codes = _shift_codes(xd, e, self.bits)
        return Exported(
            scheme=self.scheme, bits=self.bits, codes=codes.numpy().astype(np.uint8),
            negative=((xd < 0) & (codes > 0)).numpy(),
            codebook=(self._levels.cpu().double() * 2.0**e).numpy(),
            exponent=e,  # code c >= 1 stands for 2^(e - (n-1-c)), as IOS-PoT's
        )


class DeepShiftActQuantizer(UniformPoTQuantizer):
    """DeepShift's activations: 8-bit fixed point with a power-of-two step, any ``bits``."""

    scheme = "deepshift"

    def __init__(self, signed: bool = True) -> None:
        super().__init__(DEEPSHIFT_ACT_BITS, signed=signed)


registry.register(
    "deepshift",
    lambda bits, role, signed: DeepShiftWeightQuantizer(bits) if role == "weight"
    else DeepShiftActQuantizer(signed=signed),
)
