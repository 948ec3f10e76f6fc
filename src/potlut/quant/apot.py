"""APoT: additive powers-of-two levels with a learnable real clipping threshold.

Paper: Li, Dong, Wang, "Additive Powers-of-Two Quantization: An Efficient Non-uniform
Discretization for Neural Networks", ICLR 2020.

Follows:
- Eq. (5): levels ``gamma * {sum_i p_i}``, each term ``p_i`` one of ``{0, 2^-i, 2^-(i+n),
  ...}`` with ``k = 2`` bits a term; the level set is rescaled so its largest level is 1
  (so ``alpha`` is the clipping threshold). Even magnitude widths ``B = 2n`` use the
  equation as written; odd ``B`` (3, 5) and ``B = 1`` take the term sets of the authors'
  code (``build_power_value``), which the paper leaves implicit.
- §2.3 reparameterized clipping function (RCF): ``q = alpha * P(clip(x/alpha, -1, 1))``
  with ``dq/dalpha = sign(x)`` outside and ``q/alpha - x/alpha`` inside, STE for ``x``
  (the same autograd function as IOS-PoT, with a *real* ``alpha``).
- §2.4 weight normalization (``(w - mean)/std`` per layer) before quantizing weights.

Departures: activations follow the project's convention (a sign bit plus ``b-1``
magnitude bits, METHODS §1.3) unless built with ``signed=False`` (the paper's unsigned
``b``-bit activations); ``alpha`` starts at the MSE-optimal value on a calibration batch
instead of the authors' constants (3.0 weights / 8.0 activations); the paper's weight
decay on ``alpha`` is not applied (the training loop exempts quantizer scales).

Integer-only: the levels are sums of two powers of two (a product is two shifts and an
add), but ``alpha`` is a real number; it folds into the per-channel integer requantization
multiplier of the next layer (Jacob et al. 2018), not into a pure shift.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from potlut.errors import PotlutConfigError
from potlut.quant import registry
from potlut.quant.base import Exported, Quantizer
from potlut.quant.iospot import _FakeQuant, midpoints
from potlut.quant.real_step import StepFakeQuant, integer_levels, snap_step, step_codes

# Exponents j of the non-zero choices 2^-j of every additive term, by magnitude bits B.
_APOT_TERMS: dict[int, list[list[int]]] = {
    1: [[1]],
    2: [[1, 2, 3]],
    3: [[1, 2, 4], [3]],
    4: [[1, 3, 5], [2, 4, 6]],
    5: [[1, 3, 6], [2, 4, 7], [5]],
    6: [[1, 4, 7], [2, 5, 8], [3, 6, 9]],
}


def apot_levels(bits: int, signed: bool = True) -> torch.Tensor:
    """APoT magnitudes at unit scale (largest level 1), ascending, ``2^B`` of them.

    ``B = bits - 1`` magnitude bits for signed tensors, ``B = bits`` for unsigned ones.
    """
    mag_bits = bits - 1 if signed else bits
    if mag_bits not in _APOT_TERMS:
        lo, hi = (2, 7) if signed else (1, 6)
        raise PotlutConfigError(
            f"APoT supports {lo}..{hi} bits for {'signed' if signed else 'unsigned'} "
            f"tensors, got {bits}"
        )
    sums = {0.0}
    for term in _APOT_TERMS[mag_bits]:
        choices = [0.0] + [2.0**-j for j in term]
        sums = {s + c for s in sums for c in choices}
    vals = torch.tensor(sorted(sums), dtype=torch.float64)
    return vals / vals.max()


def best_real_scale(
    x: torch.Tensor, levels: torch.Tensor, signed: bool, steps: int = 100,
    max_samples: int = 1 << 16,
) -> float:
    """The clipping threshold ``alpha`` (real) that minimizes the MSE of quantizing ``x``.

    Searches ``alpha = max|x| * t`` for ``t`` on a grid in (0, 1]; large tensors are
    subsampled with a fixed stride so the cost stays bounded.
    """
    flat = x.detach().reshape(-1).double()
    if flat.numel() > max_samples:
        flat = flat[:: flat.numel() // max_samples][:max_samples]
    top = float(flat.abs().max()) if signed else float(flat.clamp_min(0).max())
    if flat.numel() == 0 or not math.isfinite(top) or top <= 0:
        return 1.0
    lv = levels.double()
    mids = midpoints(lv)
    best_a, best_err = top, math.inf
    for i in range(1, steps + 1):
        a = top * i / steps
        q = _FakeQuant.apply(flat, torch.tensor(a, dtype=torch.float64), lv, mids, signed)
        err = float(((q - flat) ** 2).mean())
        if err < best_err - 1e-15:
            best_a, best_err = a, err
    return best_a


class RealScaleQuantizer(Quantizer):
    """Fixed level set times a learnable real clipping threshold ``alpha = |a|``.

    Shared by APoT (RCF gradient) and any scheme whose levels are fixed fractions
    ``v / den`` of a real scale. The levels in use are ``v * step`` with ``step = alpha /
    den`` kept to :data:`~potlut.quant.real_step.STEP_BITS` bits, so the integer engine
    runs them exactly (:mod:`potlut.quant.real_step`).
    """

    def __init__(self, bits: int, levels: torch.Tensor, signed: bool) -> None:
        super().__init__(bits)
        self.signed = signed
        self.a = torch.nn.Parameter(torch.tensor(1.0))
        ints, self._den = integer_levels(levels)
        self.register_buffer("_levels", levels.float(), persistent=False)
        self.register_buffer("_ints", ints.float(), persistent=False)

    def levels(self) -> torch.Tensor:
        return self._levels.clone()

    def alpha(self) -> torch.Tensor:
        """The clipping threshold in use (kept away from 0): ``den`` steps."""
        return self.step() * self._den

    def step(self) -> torch.Tensor:
        """The real step between integer levels, on STEP_BITS significant bits."""
        return snap_step(self.a.abs().clamp_min(1e-8) / self._den)

    def calibrate_from(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.a.fill_(best_real_scale(x, self._levels, self.signed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        return StepFakeQuant.apply(x, self.alpha().to(x.dtype), self._ints, self._den,
                                   self.signed)

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        step = self.step().double().cpu()
        xd = x.detach().double().cpu()
        mag = xd.abs() if self.signed else xd.clamp_min(0)
        ints = self._ints.cpu().double()
        codes = step_codes(mag, step, ints)
        negative = (xd < 0) & (codes > 0) if self.signed else torch.zeros_like(codes, dtype=bool)
        return Exported(
            scheme=self.scheme, bits=self.bits, codes=codes.numpy().astype(np.uint8),
            negative=negative.numpy(), codebook=(ints * step).numpy(), exponent=None,
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


class APoTQuantizer(RealScaleQuantizer):
    """APoT (k = 2) for weights or activations, 2..7 bits signed (1..6 unsigned)."""

    scheme = "apot"

    def __init__(self, bits: int = 4, signed: bool = True) -> None:
        super().__init__(int(bits), apot_levels(int(bits), signed), signed)


registry.register(
    "apot",
    lambda bits, role, signed: APoTQuantizer(bits, signed=True if role == "weight" else signed),
)
