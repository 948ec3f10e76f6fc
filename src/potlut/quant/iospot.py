"""IOS-PoT: every value 0 or ±2^e, every scale a power of two (METHODS.md §1).

The learnable clipping threshold ``a`` is used through ``alpha = 2**round(log2|a|)``
with a straight-through estimator on the round, so rescaling is a shift at inference.
The projection maps ``|x|/alpha`` onto the nearest level (linear distance, ties to the
larger level); backward is the STE for ``x`` and the PACT/APoT gradient for ``alpha``.

The same autograd function also serves the 8-bit fixed-point first/last layers
(:class:`UniformPoTQuantizer`): uniform levels ``j / 2^(b-1)``, again with a
power-of-two ``alpha``, so the step ``alpha / 2^(b-1)`` is a power of two as well.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from potlut.errors import PotlutConfigError
from potlut.quant.base import Exported, Quantizer

MIN_BITS, MAX_BITS = 2, 8
_LOG2_A_FLOOR = -24.0  # |a| below 2^-24 would make log2 blow up; such a scale is meaningless


def check_bits(bits: int, lo: int = MIN_BITS, hi: int = MAX_BITS) -> int:
    """Validate a bit-width and return it as an int (user-facing error otherwise)."""
    if not isinstance(bits, (int, np.integer)) or not lo <= int(bits) <= hi:
        raise PotlutConfigError(f"bits must be an integer in {lo}..{hi}, got {bits!r}")
    return int(bits)


def pot_levels(bits: int, signed: bool = True) -> torch.Tensor:
    """IOS-PoT magnitudes at unit scale: ``{0} ∪ {2^-j : j = 0..n-2}``, ascending.

    ``n = 2^k`` codes with ``k = b-1`` magnitude bits (``k = b`` when unsigned).
    Code ``c`` stands for 0 (c = 0) or ``2^-(n-1-c)``.
    """
    k = bits - 1 if signed else bits
    n = 2**k
    mags = [0.0] + [2.0 ** -(n - 1 - c) for c in range(1, n)]
    return torch.tensor(mags, dtype=torch.float64)


def uniform_levels(bits: int, signed: bool = True) -> torch.Tensor:
    """Fixed-point magnitudes ``j / m`` for ``j = 0 .. m-1``, ``m = 2^(b-1)`` (``2^b`` unsigned)."""
    m = 2 ** (bits - 1) if signed else 2**bits
    return torch.arange(m, dtype=torch.float64) / m


def midpoints(levels: torch.Tensor) -> torch.Tensor:
    """Decision thresholds between consecutive levels."""
    return (levels[1:] + levels[:-1]) / 2


def project(y: torch.Tensor, levels: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level for ``y >= 0`` (ties go to the larger level)."""
    return torch.bucketize(y, mids.to(y.dtype), right=True)


def pot_scale(a: torch.Tensor) -> torch.Tensor:
    """``alpha = 2**round(log2|a|)``, STE through the round (so d alpha/d a = alpha/a)."""
    log2a = torch.log2(a.abs()).clamp_min(_LOG2_A_FLOOR)
    e = log2a + (torch.round(log2a) - log2a).detach()
    return torch.exp2(e)


class _FakeQuant(torch.autograd.Function):
    """q = alpha * sign(x) * L[P(clip(|x|/alpha, 0, 1))] with the METHODS §1 gradients."""

    @staticmethod
    def forward(ctx, x, alpha, levels, mids, signed: bool):  # noqa: D401
        lv = levels.to(x.dtype)
        mag = x.abs() if signed else x.clamp_min(0)
        y = (mag / alpha).clamp(0, 1)
        q_mag = lv[project(y, levels, mids)] * alpha
        q = torch.where(x < 0, -q_mag, q_mag) if signed else q_mag
        ctx.signed = signed
        ctx.max_level = float(levels[-1])
        ctx.save_for_backward(x, alpha, q)
        return q

    @staticmethod
    def backward(ctx, g):
        x, alpha, q = ctx.saved_tensors
        if ctx.signed:
            outside = x.abs() > alpha
            inside = ~outside
            d_alpha_out = torch.sign(x) * ctx.max_level
        else:
            outside = x > alpha
            inside = (x >= 0) & ~outside
            d_alpha_out = torch.ones_like(x) * ctx.max_level
        grad_x = g * inside
        d_alpha = torch.where(outside, d_alpha_out, torch.where(inside, (q - x) / alpha, 0.0))
        grad_alpha = (g * d_alpha).sum().reshape(alpha.shape)
        return grad_x, grad_alpha, None, None, None


def best_pot_exponent(
    x: torch.Tensor,
    levels: torch.Tensor,
    signed: bool = True,
    search: range = range(-16, 9),
    max_samples: int = 1 << 16,
) -> int:
    """The exponent ``s`` whose ``alpha = 2^s`` minimizes the MSE of quantizing ``x``.

    METHODS §1.2: the MSE start matters (constant starts lose points at 3 bits).
    Large tensors are subsampled deterministically (a fixed stride) to bound the cost.
    """
    flat = x.detach().reshape(-1).double()
    if flat.numel() > max_samples:
        stride = flat.numel() // max_samples
        flat = flat[::stride][:max_samples]
    if flat.numel() == 0 or not torch.isfinite(flat).all():
        return 0
    mids = midpoints(levels)
    best_s, best_err = 0, math.inf
    for s in search:
        alpha = torch.tensor(2.0**s, dtype=torch.float64)
        q = _FakeQuant.apply(flat, alpha, levels, mids, signed)
        err = float(((q - flat) ** 2).mean())
        if err < best_err - 1e-15:
            best_s, best_err = s, err
    return best_s


class _LevelQuantizer(Quantizer):
    """Shared machinery: a learnable ``a``, a fixed level set, PoT scale, MSE calibration."""

    def __init__(self, bits: int, levels: torch.Tensor, signed: bool) -> None:
        super().__init__(bits)
        self.signed = signed
        self.a = torch.nn.Parameter(torch.tensor(1.0))
        self.register_buffer("_levels", levels, persistent=False)
        self.register_buffer("_mids", midpoints(levels), persistent=False)

    def levels(self) -> torch.Tensor:
        return self._levels.clone()

    def alpha(self) -> torch.Tensor:
        """The power-of-two clipping scale in use."""
        return pot_scale(self.a)

    def exponent(self) -> int:
        """``s`` with ``alpha = 2^s`` (an integer by construction)."""
        return int(torch.round(torch.log2(self.a.detach().abs()).clamp_min(_LOG2_A_FLOOR)))

    def calibrate_from(self, x: torch.Tensor) -> None:
        s = best_pot_exponent(x, self._levels, self.signed)
        with torch.no_grad():
            self.a.fill_(2.0**s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        alpha = self.alpha().to(x.dtype)
        return _FakeQuant.apply(x, alpha, self._levels, self._mids, self.signed)

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        s = self.exponent()
        alpha = 2.0**s
        xd = x.detach().double().cpu()
        mag = xd.abs() if self.signed else xd.clamp_min(0)
        codes = project((mag / alpha).clamp(0, 1), self._levels.cpu(), self._mids.cpu())
        negative = (xd < 0) & (codes > 0) if self.signed else torch.zeros_like(codes, dtype=bool)
        return Exported(
            scheme=self.scheme,
            bits=self.bits,
            codes=codes.numpy().astype(np.uint8),
            negative=negative.numpy(),
            codebook=(self._levels.cpu().double() * alpha).numpy(),
            exponent=s,
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


class IOSPoTQuantizer(_LevelQuantizer):
    """IOS-PoT quantizer (weights or activations), bits 2..8.

    ``signed=True`` (default, as in the paper) spends one bit on the sign so weight and
    activation codebooks are the same set and the P-LUT is symmetric; ``signed=False``
    spends all ``b`` bits on the magnitude of non-negative (post-ReLU) activations.
    """

    scheme = "iospot"

    def __init__(self, bits: int = 4, signed: bool = True) -> None:
        bits = check_bits(bits)
        super().__init__(bits, pot_levels(bits, signed).float(), signed)


class UniformPoTQuantizer(_LevelQuantizer):
    """Fixed point with a power-of-two step: the 8-bit first/last layers (METHODS §1.6).

    Sign-magnitude codes ``j`` in ``0 .. 2^(b-1)-1`` with value ``j * alpha / 2^(b-1)``;
    rounding is to nearest with ties away from zero (the projection shared with IOS-PoT).
    """

    scheme = "fixed"

    def __init__(self, bits: int = 8, signed: bool = True) -> None:
        bits = check_bits(bits, 2, 16)
        super().__init__(bits, uniform_levels(bits, signed).float(), signed)
