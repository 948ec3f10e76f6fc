"""LSQ+: learnable step size and offset, with LSQ+'s initialization and gradient scaling.

Paper: Bhalgat, Lee, Nagel, Blankevoort, Kwak, "LSQ+: Improving low-bit quantization
through learnable offsets and better initialization", CVPR Workshops 2020 (building on
Esser et al., "Learned Step Size Quantization", ICLR 2020).

Follows:
- Eq. (3)-(4): ``x_q = round(clamp((x - beta)/s, n, p)) * s + beta``; weights are
  symmetric (``beta = 0``) with ``n = -2^(b-1)``, ``p = 2^(b-1) - 1``; activations have a
  learnable offset with ``n = 0``, ``p = 2^b - 1``.
- Eq. (5)-(6) gradients (STE through the round): ``dx_q/ds = round(v) - v`` inside and
  ``n`` / ``p`` outside; ``dx_q/dbeta = 0`` inside and 1 outside; ``dx_q/dx`` = 1 inside.
- LSQ's gradient scale ``g = 1 / sqrt(N * p)`` on ``s`` and ``beta`` (N: elements of the
  weight tensor, or per-sample features of an activation).
- §3.3 initialization: weights ``s = max(|mu - 3 sigma|, |mu + 3 sigma|) / 2^(b-1)``;
  activations by minimizing the MSE of ``x_q`` against ``x`` (§3.3, "MSE-based"), here
  by a grid over the clipped range ``[min, max]`` shrunk from either end.

Activation bit budget: with ``signed=True`` (the project default, METHODS §1.3, where every
other scheme spends one of the ``b`` bits on the sign) the activation codes are LSQ's signed
range ``[-2^(b-1), 2^(b-1) - 1]`` with the offset fixed at 0, so post-ReLU data get
``2^(b-1)`` levels, as IOS-PoT's do; a learned offset would slide those data onto the
negative codes and spend the sign bit on magnitude. With ``signed=False``
(``--unsigned-acts``) activations are LSQ+'s unsigned ``[0, 2^b - 1]`` with the learned
offset. (Before, the flag was ignored and LSQ+ always had ``2^b`` levels: one bit more than
every other scheme under the same W/A label.)

Departures: ``round`` is half to even; the signed activations' step starts at the MSE-best
symmetric clipping (the unsigned ones at LSQ+'s MSE-best ``[a, b]`` range).

Integer-only: no. ``s`` is real and the activation offset ``beta`` is a real number added
at run time; the codes are uniform, so a table of code products exists, but turning it
into integers needs an FP32 (or fixed-point) rescale of ``s`` and ``beta`` per layer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from potlut.quant import registry
from potlut.quant.base import Exported, Quantizer


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in forward, ``scale * grad`` in backward (LSQ's gradient scaling)."""
    return (x - x * scale).detach() + x * scale


def lsq_range(bits: int, role: str, signed: bool = False) -> tuple[int, int]:
    """Integer code range ``(n, p)``: signed for weights and signed activations,
    ``[0, 2^b - 1]`` for unsigned activations."""
    if role == "weight" or signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


class LSQPlusQuantizer(Quantizer):
    """LSQ+ for weights (``role="weight"``: step only) or activations (step, and the offset
    when unsigned)."""

    scheme = "lsq"

    def __init__(self, bits: int = 4, role: str = "weight", signed: bool = False) -> None:
        super().__init__(int(bits))
        self.role = role
        self.signed = role == "weight" or bool(signed)
        self.n, self.p = lsq_range(self.bits, role, signed)
        self.s = torch.nn.Parameter(torch.tensor(1.0))
        self.beta = torch.nn.Parameter(torch.tensor(0.0), requires_grad=not self.signed)

    def levels(self) -> torch.Tensor:
        """The integer grid ``n .. p`` (values at unit step and zero offset)."""
        return torch.arange(self.n, self.p + 1, dtype=torch.float32)

    def calibrate_from(self, x: torch.Tensor) -> None:
        xd = x.detach().double().reshape(-1)
        with torch.no_grad():
            if self.role == "weight":
                mu, sd = float(xd.mean()), float(xd.std())
                s = max(abs(mu - 3 * sd), abs(mu + 3 * sd)) / 2 ** (self.bits - 1)
                self.s.fill_(max(s, 1e-8))
            elif self.signed:
                self.s.fill_(_mse_symmetric_step(xd, self.n, self.p))
            else:
                s, beta = _mse_range(xd, self.p)
                self.s.fill_(s)
                self.beta.fill_(beta)

    def _scale(self, x: torch.Tensor) -> float:
        numel = x.numel() if self.role == "weight" else x[0].numel() if x.dim() > 1 else x.numel()
        return 1.0 / math.sqrt(max(numel, 1) * max(self.p, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        g = self._scale(x)
        s = grad_scale(self.s.abs().clamp_min(1e-8), g).to(x.dtype)
        beta = grad_scale(self.beta, g).to(x.dtype)
        v = ((x - beta) / s).clamp(self.n, self.p)
        v = v + (torch.round(v) - v).detach()
        return v * s + beta

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes ``round(clamp((x - beta)/s, n, p))``."""
        s = float(self.s.detach().abs().clamp_min(1e-8))
        v = (x.detach().double() - float(self.beta.detach())) / s
        return torch.round(v.clamp(self.n, self.p)).long()

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        c = self.codes(x).cpu()
        s, beta = float(self.s.abs()), float(self.beta)
        if self.signed:  # sign-magnitude: |c| in 0 .. 2^(b-1), offset 0
            codes, negative = c.abs(), c < 0
            codebook = np.arange(-self.n + 1, dtype=np.float64) * s
        else:  # offset codes: value = s * c + beta, sign folded into the codebook
            codes, negative = c, torch.zeros_like(c, dtype=bool)
            codebook = np.arange(self.p + 1, dtype=np.float64) * s + beta
        return Exported(
            scheme=self.scheme, bits=self.bits, codes=codes.numpy().astype(np.uint8),
            negative=negative.numpy(), codebook=codebook, exponent=None,
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, role={self.role}, signed={self.signed}"


def _mse_symmetric_step(x: torch.Tensor, n: int, p: int, steps: int = 32) -> float:
    """Step ``s`` of codes ``n..p`` (offset 0) whose clipping minimizes the quantization MSE."""
    if x.numel() > 1 << 16:
        x = x[:: x.numel() // (1 << 16)]
    top = float(x.abs().max()) if x.numel() else 0.0
    if not (math.isfinite(top) and top > 0):
        return 1.0
    best = (math.inf, top / p)
    for i in range(steps):
        s = top * (1 - 0.95 * i / steps) / p
        err = float(((torch.round((x / s).clamp(n, p)) * s - x) ** 2).mean())
        if err < best[0] - 1e-15:
            best = (err, s)
    return best[1]


def _mse_range(x: torch.Tensor, p: int, steps: int = 16) -> tuple[float, float]:
    """(s, beta) for codes ``0..p`` whose clipped range minimizes the quantization MSE."""
    if x.numel() > 1 << 16:
        x = x[:: x.numel() // (1 << 16)]
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return 1.0, lo if math.isfinite(lo) else 0.0
    best = (math.inf, (hi - lo) / p, lo)
    for i in range(steps):
        a = lo + (hi - lo) * 0.5 * i / steps  # shrink the bottom (half of the range at most)
        for j in range(steps):
            b = hi - (hi - a) * 0.95 * j / steps
            s = (b - a) / p
            q = torch.round(((x - a) / s).clamp(0, p)) * s + a
            err = float(((q - x) ** 2).mean())
            if err < best[0] - 1e-15:
                best = (err, s, a)
    return best[1], best[2]


registry.register(
    "lsq",
    lambda bits, role, signed: LSQPlusQuantizer(bits, role, signed),
)
