"""ESB: elastic significant bits with the distribution difference aligner (scheme ``esb``).

Paper: Gong, Lu, Xie, Jin, Chen, Wang, Li, Wu, "Elastic Significant Bit Quantization and
Acceleration for Deep Neural Networks", IEEE TPDS 2021.

Follows:
- Sec. 3: a ``b``-bit ESB value keeps at most ``k`` significant bits: magnitudes are
  ``2^-e (1 + m / 2^(k-1))`` (``m < 2^(k-1)``, ``e >= 0``), the largest ``2^(b-1) - 1`` of
  them and 0, normalized to 1 and scaled by ``alpha``. ``k = 1`` is power-of-two
  quantization, larger ``k`` approaches uniform levels: ``k`` trades resolution at large
  magnitudes against the multiplication cost.
- Multiplication cost (Sec. 5): a product with a ``k``-significant-bit value is at most
  ``k`` shifted additions of the other operand: :func:`shift_adds_per_product` counts them
  for the weights a layer actually has.
- DDA (Sec. 4): the scale ``alpha`` aligns the level distribution with the data by
  minimizing the squared difference between the values and their levels; solved by
  alternating nearest-level assignment and the least-squares scale
  ``alpha = <|x|, l> / <l, l>`` (:func:`dda_scale`), for weights in every training step and
  for activations at calibration.

Departures: one ``alpha`` per tensor, ``k = 2`` for every layer (the paper chooses ``k`` per
network), no subnormal-style uniform levels next to zero; the STE is clipped to the
largest level.

Integer-only: yes. The levels are integers times one real step (the step and ``alpha``
fold into the requantization multiplier): the integer engine's P-LUT holds exact products.
"""

from __future__ import annotations

import numpy as np
import torch

from potlut.quant import registry
from potlut.quant.base import Exported, Quantizer
from potlut.quant.iospot import check_bits

SIGNIFICANT_BITS = 2
DDA_STEPS = 32  # converged: each step can only lower the error


def esb_levels(bits: int, k: int = SIGNIFICANT_BITS, signed: bool = True) -> torch.Tensor:
    """ESB magnitudes at unit scale, ascending: 0 and the largest values with ``k``
    significant bits (``2^(b-1)`` codes signed, ``2^b`` unsigned)."""
    n = 2 ** (bits - 1) if signed else 2**bits
    vals = []
    e = 0
    while len(vals) < n - 1:
        for m in reversed(range(2 ** (k - 1))):
            vals.append(2.0**-e * (1 + m / 2 ** (k - 1)))
        e += 1
    top = sorted(vals, reverse=True)[: n - 1]
    return torch.tensor([0.0] + sorted(v / top[0] for v in top), dtype=torch.float64)


def shift_adds_per_product(codebook: torch.Tensor | np.ndarray) -> list[int]:
    """Shift-adds a product with each level costs: the set bits of the level in the
    integer form the engine uses (0 for the zero level)."""
    from potlut.infer.plut import fixed_codebook

    values = fixed_codebook(np.asarray(codebook, dtype=np.float64), "esb", "ESB levels").values
    return [bin(int(v)).count("1") for v in values]


def dda_scale(t: torch.Tensor, levels: torch.Tensor, alpha: float) -> float:
    """DDA: alternate nearest level and least-squares scale from ``alpha`` (magnitudes ``t``)."""
    t = t.reshape(-1).double()
    if t.numel() > 1 << 16:
        t = t[:: t.numel() // (1 << 16)]
    if t.numel() == 0 or not float(t.max()) > 0:
        return alpha
    lv = levels.double()
    mids = (lv[1:] + lv[:-1]) / 2
    if not alpha > 0:
        alpha = float(t.max())
    for _ in range(DDA_STEPS):
        idx = torch.bucketize((t / alpha).clamp(0, 1), mids, right=True)
        lt = lv[idx]
        den = float((lt * lt).sum())
        if den == 0:
            break
        new = float((t * lt).sum()) / den
        if new == alpha:
            break
        alpha = new
    return alpha


class ESBQuantizer(Quantizer):
    """ESB levels times a DDA-aligned real scale, for a weight or an activation tensor."""

    scheme = "esb"

    def __init__(self, bits: int = 4, role: str = "weight", signed: bool = True,
                 k: int = SIGNIFICANT_BITS) -> None:
        super().__init__(check_bits(bits, 2, 8))
        self.role = role
        self.signed = True if role == "weight" else signed
        self.k = max(1, min(k, self.bits - 1))
        self.register_buffer("_levels", esb_levels(self.bits, self.k, self.signed).float())
        self.register_buffer("alpha", torch.ones((), dtype=torch.float64))

    def levels(self) -> torch.Tensor:
        return self._levels.clone()

    def _mag(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs() if self.signed else x.clamp_min(0)

    @torch.no_grad()
    def calibrate_from(self, x: torch.Tensor) -> None:
        self.alpha.fill_(dda_scale(self._mag(x.detach()), self._levels, float(self.alpha)))

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        lv = self._levels.to(torch.float64)
        mids = (lv[1:] + lv[:-1]) / 2
        t = (self._mag(x.detach()).double() / float(self.alpha)).clamp(0, 1)
        return torch.bucketize(t, mids, right=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        if self.role == "weight" and self.training and torch.is_grad_enabled():
            self.calibrate_from(x)  # DDA on the current weights
        book = (self._levels.double() * float(self.alpha)).to(x.dtype)
        mag = book[self._codes(x)]
        q = torch.where(x < 0, -mag, mag) if self.signed else mag
        inside = self._mag(x) <= book[-1]
        ste = torch.where(inside, x, x.detach())
        return q.detach() + (ste - ste.detach())

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        xd = x.detach().double().cpu()
        codes = self._codes(xd)
        neg = (xd < 0) & (codes > 0) if self.signed else torch.zeros_like(xd, dtype=bool)
        book = self._levels.double().cpu() * float(self.alpha)
        return Exported(scheme=self.scheme, bits=self.bits,
                        codes=codes.numpy().astype(np.uint8), negative=neg.numpy(),
                        codebook=book.numpy(), exponent=None)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, k={self.k}, role={self.role}, signed={self.signed}"


registry.register("esb", lambda bits, role, signed: ESBQuantizer(bits, role, signed))
