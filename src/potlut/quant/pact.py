"""PACT activations (learnable clipping ``alpha``) with DoReFa weights.

Paper: Choi et al., "PACT: Parameterized Clipping Activation for Quantized Neural
Networks", arXiv:1805.06085 (2018); weights as in its experiments, DoReFa-Net (Zhou et
al., arXiv:1606.06160, Eq. 9).

Follows:
- PACT Eq. (1)-(2): ``y = clip(x, 0, alpha)``, ``y_q = round(y * m / alpha) * alpha / m``
  with ``m = 2^k - 1`` (``round`` half to even), so the levels are ``alpha * j / m``,
  ``j = 0..m``, the top level being ``alpha`` itself.
- PACT Eq. (3): ``dy_q/dalpha = 1`` where ``x >= alpha``, else 0 (STE through the round);
  STE for ``x`` inside ``[0, alpha]``.
- DoReFa Eq. (9): ``w_q = 2 * quantize_b(tanh(w) / (2 max|tanh w|) + 1/2) - 1``, i.e. the
  ``2^b`` levels ``(2c - m) / m`` with ``m = 2^b - 1`` (no zero); STE through the round,
  the tanh and the max get their exact gradients. DoReFa has no learnable parameter.

Departures: a signed activation (the project's default, METHODS §1.3) clips to
``[-alpha, alpha]`` and spends one bit on the sign (``k = b - 1``), with
``dy_q/dalpha = sign(x)`` outside; ``signed=False`` is the paper's post-ReLU form with
``k = b``. ``alpha`` starts at the MSE-optimal value on a calibration batch rather than
10, and its L2 regularizer is not applied. The step ``alpha / m`` (and DoReFa's
``max|w| / m``) keeps 11 significant bits and the round breaks ties upward, not to even
(:mod:`potlut.quant.real_step`: so the integer engine computes the same numbers).
DoReFa's output is a multiple of the constant ``max|w| / m`` (no gradient) so the
quantized weight stays on the scale of the weight, as for every other quantizer (the
distribution loss compares the two); the BatchNorm after the layer absorbs that
constant, so the network function class is the paper's.

Integer-only: the activation scale ``alpha / m`` and the weight scale are real; both fold
into the per-channel integer requantization multiplier (Jacob et al. 2018).
"""

from __future__ import annotations

import numpy as np
import torch

from potlut.quant import registry
from potlut.quant.apot import best_real_scale
from potlut.quant.base import Exported, Quantizer
from potlut.quant.real_step import snap_step, step_codes


def pact_levels(bits: int, signed: bool = True) -> torch.Tensor:
    """PACT magnitudes at unit ``alpha``: ``j / (2^k - 1)``, ``j = 0 .. 2^k - 1``."""
    k = bits - 1 if signed else bits
    m = 2**k - 1
    return torch.arange(m + 1, dtype=torch.float64) / m


def dorefa_levels(bits: int) -> torch.Tensor:
    """DoReFa weight values at unit range: ``(2c - m) / m`` for ``c = 0..m``, ``m = 2^b - 1``."""
    m = 2**bits - 1
    return (2 * torch.arange(m + 1, dtype=torch.float64) - m) / m


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class _PACT(torch.autograd.Function):
    """``step * round(clip(x, alpha) / step)``, ``step = alpha / m``, with PACT's gradients
    (Eq. 3); the round is to the nearest level on exact midpoints, ties up (the engine's)."""

    @staticmethod
    def forward(ctx, x, alpha, m: int, signed: bool):  # noqa: D401
        step = alpha / m  # exact: alpha is m times a STEP_BITS step
        mag = x.abs() if signed else x.clamp_min(0)
        q = step_codes(torch.minimum(mag, alpha), step, torch.arange(m + 1)).to(x.dtype) * step
        q = torch.where(x < 0, -q, q) if signed else q
        ctx.save_for_backward(x, alpha)
        ctx.signed = signed
        return q

    @staticmethod
    def backward(ctx, g):
        x, alpha = ctx.saved_tensors
        if ctx.signed:
            inside = x.abs() < alpha
            d_alpha = torch.where(inside, 0.0, torch.sign(x))
        else:
            inside = (x >= 0) & (x < alpha)
            d_alpha = (x >= alpha).to(x.dtype)
        return g * inside, (g * d_alpha).sum().reshape(alpha.shape), None, None


class PACTQuantizer(Quantizer):
    """PACT activation quantizer with learnable clipping ``alpha``."""

    scheme = "pact"

    def __init__(self, bits: int = 4, signed: bool = True) -> None:
        super().__init__(int(bits))
        self.signed = signed
        k = self.bits - 1 if signed else self.bits
        self.m = 2**k - 1
        self.a = torch.nn.Parameter(torch.tensor(10.0))  # the paper's start; calibrated later

    def levels(self) -> torch.Tensor:
        return pact_levels(self.bits, self.signed).float()

    def alpha(self) -> torch.Tensor:
        """The clipping threshold in use: ``m`` real steps of STEP_BITS bits each."""
        return self.step() * self.m

    def step(self) -> torch.Tensor:
        return snap_step(self.a.abs().clamp_min(1e-8) / self.m)

    def calibrate_from(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.a.fill_(best_real_scale(x, pact_levels(self.bits, self.signed), self.signed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        return _PACT.apply(x, self.alpha().to(x.dtype), self.m, self.signed)

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        step = self.step().double().cpu()
        xd = x.detach().double().cpu()
        mag = xd.abs() if self.signed else xd.clamp_min(0)
        ints = torch.arange(self.m + 1, dtype=torch.float64)
        codes = step_codes(mag, step, ints)
        negative = (xd < 0) & (codes > 0) if self.signed else torch.zeros_like(codes, dtype=bool)
        return Exported(
            scheme=self.scheme, bits=self.bits, codes=codes.numpy().astype(np.uint8),
            negative=negative.numpy(), codebook=(ints * step).numpy(), exponent=None,
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


class DoReFaWeightQuantizer(Quantizer):
    """DoReFa-Net weight quantizer (the weights of PACT's experiments); no parameters."""

    scheme = "pact"

    def __init__(self, bits: int = 4) -> None:
        super().__init__(int(bits))
        self.m = 2**self.bits - 1

    def levels(self) -> torch.Tensor:
        """Magnitudes at unit range: ``(2i + 1) / m`` for ``i = 0 .. 2^(b-1) - 1``."""
        vals = dorefa_levels(self.bits)
        return vals[vals > 0].float()

    def _odd(self, w: torch.Tensor) -> torch.Tensor:
        """The integer ``2c - m`` of every weight (odd, ``-m..m``; STE through the round)."""
        t = torch.tanh(w)
        r = t / (2 * t.abs().max().clamp_min(1e-12)) + 0.5
        return 2 * _ste_round(r * self.m) - self.m

    def step(self, w: torch.Tensor) -> torch.Tensor:
        """``max|w| / m`` on STEP_BITS bits (a constant: DoReFa has no scale to learn); the
        weight is ``(2c - m) * step``, exact, so the engine's integer form is the weight."""
        return snap_step(w.detach().abs().max().clamp_min(1e-30) / self.m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            return x
        return self._odd(x) * self.step(x)

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        # in the forward's own dtype: float64 rounded r * m differently where it sits within
        # float32 error of a half step (7 bits: one code then held two weight values)
        xd = x.detach().cpu()
        c = self._odd(xd).double()  # odd integers -m..m
        step = float(self.step(xd))
        return Exported(
            scheme=self.scheme, bits=self.bits,
            codes=((c.abs() - 1) // 2).long().numpy().astype(np.uint8),
            negative=(c < 0).numpy(),
            codebook=(torch.arange(1, self.m + 1, 2, dtype=torch.float64) * step).numpy(),
            exponent=None,
        )


registry.register(
    "pact",
    lambda bits, role, signed: DoReFaWeightQuantizer(bits) if role == "weight"
    else PACTQuantizer(bits, signed=signed),
)
