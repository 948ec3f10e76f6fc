"""SRQ with DropBits: semi-relaxed quantization, random bit dropping, learned bit-widths
(scheme ``srq``).

Paper: Lee, Kim, Kang, Hwang, "Cluster-Promoting Quantization with Bit-Drop for Minimizing
Network Quantization Loss", ICCV 2021.

Follows:
- SRQ (Sec. 3.1): a value ``u = x / s`` on the grid ``{c s}`` gets the probabilities of its
  two neighbouring grid points under logistic noise (Relaxed Quantization's local grid),
  ``P(c) = sigmoid((u - c + 1/2) / tau) - sigmoid((u - c - 1/2) / tau)``, normalized to ``r``.
  Forward takes the most probable point (one-hot, i.e. the nearest); backward is the
  multi-class straight-through estimator: the gradient of ``sum_c r_c c``, which pulls
  values towards the grid point they are assigned to (the cluster-promoting effect).
  The step ``s`` is learned through the same expression.
- DropBits (Sec. 3.2): in training every code independently loses its least significant
  bit (rounded to the grid of one bit less) with probability ``1 - pi``; the keep gate is a
  hard-concrete sample (straight-through), so ``pi = sigmoid(theta)`` is learned.
- Learned bit-widths (Sec. 3.3): a penalty ``lambda * pi`` per layer (added to ``theta``'s
  gradient) asks each layer to drop its last bit; when a layer's ``pi`` falls below 1/2 at
  the end of an epoch, its bit-width becomes one less for good (step doubled) and its gate
  starts again.

Departures: ``tau`` is fixed (0.5 grid steps); one gate per layer and role for the last bit
only (the paper gates every bit level); the penalty weight ``lambda`` is a constant
(:data:`PENALTY`); bit-widths do not go below 2.

Integer-only: yes. Uniform codes times a real step: the step folds into the requantization
multiplier and the P-LUT holds exact integer products.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from potlut.quant import registry, schedule
from potlut.quant.base import Exported, Quantizer
from potlut.quant.iospot import check_bits

TAU = 0.5  # logistic noise scale, in grid steps
KEEP_INIT = 0.9  # initial probability of keeping the last bit
CONCRETE_T = 2.0 / 3.0  # hard-concrete temperature
PENALTY = 4.0  # lambda: pressure towards one bit less, per layer
MIN_BITS = 2
# learned widths stop here: at 2/2 bits (binary post-ReLU activations) the 10-epoch digits
# compare fell to 53.5 % (FP32 97.6); at 3 bits it holds
MIN_LEARNED_BITS = 3


def semi_relaxed(u: torch.Tensor, lo: int, hi: int, tau: float = TAU) -> torch.Tensor:
    """Codes of ``u`` (grid units) in ``[lo, hi]``: nearest forward, the gradient of the
    relaxed expectation over the two neighbouring grid points backward."""
    u = u.clamp(lo, hi)
    f = torch.floor(u.detach()).clamp(lo, hi - 1) if hi > lo else torch.full_like(u, lo)
    c0, c1 = f, f + 1
    p0 = torch.sigmoid((u - c0 + 0.5) / tau) - torch.sigmoid((u - c0 - 0.5) / tau)
    p1 = torch.sigmoid((u - c1 + 0.5) / tau) - torch.sigmoid((u - c1 - 0.5) / tau)
    r1 = p1 / (p0 + p1).clamp_min(1e-12)
    soft = c0 + r1
    ud = u.detach()  # most probable = nearest; ties away from zero (as the engine rounds)
    hard = (torch.sign(ud) * torch.floor(ud.abs() + 0.5)).clamp(lo, hi)
    return hard + (soft - soft.detach())


class SRQQuantizer(Quantizer):
    """Uniform grid ``s * c``; SRQ gradient, DropBits gate and a learnable bit-width."""

    scheme = "srq"

    def __init__(self, bits: int = 4, role: str = "weight", signed: bool = True) -> None:
        super().__init__(check_bits(bits, MIN_BITS, 8))
        self.role = role
        self.signed = True if role == "weight" else signed
        self.log_s = nn.Parameter(torch.tensor(0.0))
        self.theta = nn.Parameter(torch.tensor(math.log(KEEP_INIT / (1 - KEEP_INIT))))
        self.register_buffer("cur_bits", torch.tensor(self.bits))
        self._hooked = 0  # id of the theta tensor carrying the penalty hook (copies need one)

    def _penalty(self, grad: torch.Tensor) -> torch.Tensor:
        """Gradient of ``lambda * pi`` added to the loss's: the learned bit-width pressure."""
        pi = torch.sigmoid(self.theta.detach())
        return grad + PENALTY * pi * (1 - pi)

    def keep_probability(self) -> float:
        return float(torch.sigmoid(self.theta.detach()))

    def top(self) -> int:
        """Largest code magnitude at the current bit-width."""
        b = int(self.cur_bits)
        return 2 ** (b - 1) - 1 if self.signed else 2**b - 1

    def levels(self) -> torch.Tensor:
        return torch.arange(self.top() + 1, dtype=torch.float32) * self.log_s.detach().exp()

    @torch.no_grad()
    def calibrate_from(self, x: torch.Tensor) -> None:
        """MSE-best step among 32 candidates up to ``max|x| / top``."""
        t = x.detach().abs() if self.signed else x.detach().clamp_min(0)
        t = t.reshape(-1)[:: max(1, t.numel() // (1 << 16))].double()
        hi = float(t.max()) / self.top() if t.numel() else 0.0
        if not hi > 0:
            return
        best = min((float(((torch.round((t / s).clamp(0, self.top())) * s - t) ** 2).sum()), s)
                   for s in (hi * f / 32 for f in range(4, 33)))[1]
        self.log_s.fill_(math.log(best))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        s = self.log_s.exp()
        top = self.top()
        lo = -top if self.signed else 0
        code = semi_relaxed(x / s, lo, top)
        if self.training and torch.is_grad_enabled():
            if self._hooked != id(self.theta):
                self.theta.register_hook(self._penalty)
                self._hooked = id(self.theta)
            coarse_top = top - 1  # the largest even code: the grid of one bit less
            coarse = (2 * torch.sign(code.detach()) * torch.floor(code.detach().abs() / 2 + 0.5)
                      ).clamp(-coarse_top if self.signed else 0, coarse_top)
            coarse = coarse + (code - code.detach())
            noise = torch.rand_like(x).clamp(1e-6, 1 - 1e-6)
            z_soft = torch.sigmoid((noise.log() - (-noise).log1p() + self.theta) / CONCRETE_T)
            z = (z_soft > 0.5).to(x.dtype) + (z_soft - z_soft.detach())
            code = coarse + z * (code - coarse)
        return code * s

    @torch.no_grad()
    def drop_bit(self) -> None:
        """One bit less for good: twice the step, the gate back to its start."""
        self.cur_bits.sub_(1)
        self.bits = int(self.cur_bits)
        self.log_s.add_(math.log(2.0))
        self.theta.fill_(math.log(KEEP_INIT / (1 - KEEP_INIT)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.bits = int(self.cur_bits)

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        s = self.log_s.detach().exp().cpu()
        top = self.top()
        code = semi_relaxed(x.detach().float().cpu() / s, -top if self.signed else 0, top)
        book = np.arange(top + 1, dtype=np.float64) * float(s)
        return Exported(scheme=self.scheme, bits=int(self.cur_bits),
                        codes=code.abs().numpy().astype(np.uint8), negative=(code < 0).numpy(),
                        codebook=book, exponent=None)

    def extra_repr(self) -> str:
        return f"bits={int(self.cur_bits)}, role={self.role}, signed={self.signed}"


def learned_bits_schedule(qmodel: nn.Module, epochs: int) -> Callable[[int, Any], None]:
    """Epoch-end callback: every layer whose keep gate fell below 1/2 loses its last bit.

    Bits drop only in the first half of QAT, so the second half fine-tunes at the learned
    widths (as ALQ's reduction does), and never below ``MIN_LEARNED_BITS``.
    """
    def on_epoch_end(epoch: int, log: Any) -> None:
        if epoch > epochs // 2:  # epoch counts finished epochs (1-based)
            return
        for q in qmodel.modules():
            if isinstance(q, SRQQuantizer) and q.keep_probability() < 0.5 \
                    and int(q.cur_bits) > MIN_LEARNED_BITS:
                q.drop_bit()

    return on_epoch_end


registry.register("srq", lambda bits, role, signed: SRQQuantizer(bits, role, signed))
schedule.register("srq", learned_bits_schedule)
