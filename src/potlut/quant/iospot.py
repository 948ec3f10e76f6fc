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
from collections.abc import Callable

import numpy as np
import torch

from potlut.errors import PotlutConfigError
from potlut.quant import kernels
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


class _FakeQuantBackward(torch.autograd.Function):
    """Shared backward of the fake quantizers (METHODS §1.4-5).

    Forward saves ``x``, ``alpha``, ``q`` and the mask ``inside`` (|x| <= alpha; for
    unsigned tensors 0 <= x <= alpha). Then ``d q/d x`` is 1 inside and 0 outside (STE),
    and ``d q/d alpha`` is ``(q - x)/alpha`` inside and ``q/alpha`` outside, which equals
    ``sign(x)`` times the top level beyond the clip (and 0 for clipped negatives).
    """

    n_extra = 3

    @staticmethod
    def save(ctx, x, alpha, q, inside) -> None:
        ctx.save_for_backward(x, alpha, q, inside)

    @classmethod
    def backward(cls, ctx, g):
        x, alpha, q, inside = ctx.saved_tensors
        grad_x = torch.where(inside, g, 0.0)
        grad_alpha = (g * (q - torch.where(inside, x, 0.0))).sum() / alpha
        return (grad_x, grad_alpha.reshape(alpha.shape)) + (None,) * cls.n_extra


class _FakeQuant(_FakeQuantBackward):
    """Any sorted level set: ``q = alpha * sign(x) * L[P(clip(|x|/alpha, 0, 1))]``."""

    n_extra = 3

    @staticmethod
    def forward(ctx, x, alpha, levels, mids, signed: bool):
        lv = levels.to(x.dtype)
        mag = x.abs() if signed else x.clamp_min(0)
        q_mag = lv[project((mag / alpha).clamp(0, 1), levels, mids)] * alpha
        q = torch.where(x < 0, -q_mag, q_mag) if signed else q_mag
        inside = (mag <= alpha) if signed else (x >= 0) & (x <= alpha)
        _FakeQuantBackward.save(ctx, x, alpha, q, inside)
        return q


_POT_BITS = {torch.float32: (torch.int32, 1 << 22, 0x7F800000),
             torch.float64: (torch.int64, 1 << 51, 0x7FF0000000000000)}


def pot_round(m: torch.Tensor) -> torch.Tensor:
    """Nearest power of two of positive normal floats, ties to the larger, on the bits.

    Adding half the mantissa range carries into the exponent exactly when the mantissa
    is >= 1.5, i.e. when ``m >= 0.75 * 2^(e+1)``; masking the mantissa leaves ``2^e``.
    """
    itype, half, mask = _POT_BITS[m.dtype]
    return ((m.view(itype) + half) & mask).view(m.dtype)


class _PoTFakeQuant(_FakeQuantBackward):
    """IOS-PoT levels ``{0} ∪ {2^-j}`` with ``n`` codes, in a few elementwise passes.

    Same result as :class:`_FakeQuant` with :func:`pot_levels` (a test checks it), but
    ~10x faster than ``bucketize`` on CPU: clamp to [smallest level, alpha], round to
    the nearest power of two on the float bits, zero below half the smallest level.
    """

    n_extra = 2

    @staticmethod
    def forward(ctx, x, alpha, n: int, signed: bool):
        mag = x.abs() if signed else x.clamp_min(0)
        smallest = alpha * 2.0 ** -(n - 2) if n > 2 else alpha
        rounded = pot_round(torch.clamp(mag, smallest, alpha))
        q_mag = torch.where(mag >= smallest * 0.5, rounded, 0.0)
        q = torch.copysign(q_mag, x) if signed else q_mag
        inside = (mag <= alpha) if signed else (x >= 0) & (x <= alpha)
        _FakeQuantBackward.save(ctx, x, alpha, q, inside)
        return q


class _FusedFakeQuant(torch.autograd.Function):
    """One-pass CPU kernels (:mod:`potlut.quant.kernels`) for contiguous float32 tensors."""

    @staticmethod
    def forward(ctx, x, alpha, kind: int, param_scale: float, signed: bool):
        a = float(alpha)
        param = a * param_scale
        flat = x.detach().contiguous().view(-1).numpy()
        q = torch.from_numpy(kernels.forward(flat, a, param, kind, signed)).view_as(x)
        ctx.save_for_backward(x, q)
        ctx.args = (a, signed)
        return q

    @staticmethod
    def backward(ctx, g):
        x, q = ctx.saved_tensors
        gflat = g.detach().contiguous().view(-1).float().numpy()
        xflat = x.detach().contiguous().view(-1).numpy()
        gx, ga = kernels.backward(xflat, q.view(-1).numpy(), gflat, *ctx.args)
        grad_alpha = torch.tensor(ga, dtype=torch.float32)
        return torch.from_numpy(gx).view_as(x), grad_alpha, None, None, None


def _fused_ok(x: torch.Tensor) -> bool:
    return kernels.AVAILABLE and x.device.type == "cpu" and x.dtype == torch.float32


class _UniformFakeQuant(_FakeQuantBackward):
    """Fixed point ``j * alpha / n``, ``j < n``, rounding half up (ties to the larger level)."""

    n_extra = 2

    @staticmethod
    def forward(ctx, x, alpha, n: int, signed: bool):
        mag = x.abs() if signed else x.clamp_min(0)
        step = alpha / n
        j = torch.floor(torch.minimum(mag, alpha) / step + 0.5).clamp_max(n - 1)
        q_mag = j * step
        q = torch.copysign(q_mag, x) if signed else q_mag
        inside = (mag <= alpha) if signed else (x >= 0) & (x <= alpha)
        _FakeQuantBackward.save(ctx, x, alpha, q, inside)
        return q


def best_exponent(
    x: torch.Tensor,
    quantize: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    search: range = range(-16, 9),
    max_samples: int = 1 << 16,
) -> int:
    """The exponent ``s`` whose ``alpha = 2^s`` minimizes the MSE of ``quantize(x, alpha)``.

    METHODS §1.2: the MSE start matters (constant starts lose points at 3 bits).
    Large tensors are subsampled deterministically (a fixed stride) to bound the cost.
    """
    flat = x.detach().reshape(-1)
    if flat.numel() > max_samples:
        stride = flat.numel() // max_samples
        flat = flat[::stride][:max_samples]
    flat = flat.contiguous()
    if flat.numel() == 0 or not torch.isfinite(flat).all():
        return 0
    best_s, best_err = 0, math.inf
    with torch.no_grad():
        for s in search:
            q = quantize(flat, torch.tensor(2.0**s, dtype=flat.dtype, device=flat.device))
            err = float(((q - flat) ** 2).sum(dtype=torch.float64)) / flat.numel()
            if err < best_err - 1e-15:
                best_s, best_err = s, err
    return best_s


def best_pot_exponent(
    x: torch.Tensor,
    levels: torch.Tensor,
    signed: bool = True,
    search: range = range(-16, 9),
    max_samples: int = 1 << 16,
) -> int:
    """:func:`best_exponent` for any sorted level set (the level-table projection, float64)."""
    mids = midpoints(levels)
    return best_exponent(
        x.double(), lambda f, a: _FakeQuant.apply(f, a, levels, mids, signed), search, max_samples
    )


class _LevelQuantizer(Quantizer):
    """Shared machinery: a learnable ``a``, a fixed level set, PoT scale, MSE calibration."""

    kind = "levels"  # "pot" and "uniform" have closed-form fast paths

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
        s = best_exponent(x, self.fake_quant)
        with torch.no_grad():
            self.a.fill_(2.0**s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        return self.fake_quant(x, self.alpha())

    def fake_quant(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Quantize ``x`` at scale ``alpha`` (the fast closed form where there is one)."""
        n = self._levels.numel()
        dtype = x.dtype
        if dtype not in _POT_BITS:  # half / bfloat16 (mixed precision): compute in float32
            x = x.float()
        alpha = alpha.to(x.dtype)
        if self.kind == "uniform" and _fused_ok(x):
            q = _FusedFakeQuant.apply(x, alpha, kernels.KIND_UNIFORM, 1.0 / n, self.signed)
        elif self.kind == "pot" and n <= 64 and _fused_ok(x):
            scale = 2.0 ** -(n - 2) if n > 2 else 1.0
            q = _FusedFakeQuant.apply(x, alpha, kernels.KIND_POT, scale, self.signed)
        elif self.kind == "uniform":
            q = _UniformFakeQuant.apply(x, alpha, n, self.signed)
        elif self.kind == "pot" and n <= 64:  # smallest level stays a normal float
            q = _PoTFakeQuant.apply(x, alpha, n, self.signed)
        else:
            q = _FakeQuant.apply(x, alpha, self._levels, self._mids, self.signed)
        return q.to(dtype)

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
    kind = "pot"

    def __init__(self, bits: int = 4, signed: bool = True) -> None:
        bits = check_bits(bits)
        super().__init__(bits, pot_levels(bits, signed).float(), signed)


class UniformPoTQuantizer(_LevelQuantizer):
    """Fixed point with a power-of-two step: the 8-bit first/last layers (METHODS §1.6).

    Sign-magnitude codes ``j`` in ``0 .. 2^(b-1)-1`` with value ``j * alpha / 2^(b-1)``;
    rounding is to nearest with ties away from zero (the projection shared with IOS-PoT).
    """

    scheme = "fixedpoint"
    kind = "uniform"

    def __init__(self, bits: int = 8, signed: bool = True) -> None:
        bits = check_bits(bits, 2, 16)
        super().__init__(bits, uniform_levels(bits, signed).float(), signed)
