"""SQ: stochastic quantization of filters with a growing ratio (scheme ``sq``).

Paper: Dong, Ni, Li, Chen, Zhu, Su, "Learning Accurate Low-Bit Deep Neural Networks with
Stochastic Quantization", BMVC 2017.

Follows:
- Sec. 3.1: at each stage a ratio ``r`` of each layer's filters (output channels) is
  quantized, the rest stays full precision; the schedule is 50 % -> 75 % -> 87.5 % -> 100 %
  (one stage per quarter of the QAT epochs), so the last stage trains a fully quantized
  network.
- Sec. 3.2: the quantized filters are drawn at random in every training step, without
  replacement, with probability ``p_i = f_i / sum f`` where ``f_i = 1 / e_i`` (the paper's
  "linear" function) and ``e_i = |W_i - Q_i|_1 / |W_i|_1`` the filter's relative error:
  filters that quantize well are quantized first.
- The base quantizer is ternary (the paper's TWN variant): ``{0, ±alpha}``.

Departures: the ternary base uses the least-squares optimal threshold and scale of LS-T
(:func:`potlut.quant.lsbinary.lst_fit`, one scale per tensor) instead of TWN's
``0.7 E|w|`` approximation; activations are not part of SQ (the paper keeps them in full
precision): here they are ``b``-bit fixed point. In evaluation the last drawn partition is
kept. The file can be written only at ratio 100 % (the end of the schedule).

Integer-only: yes at the end of training: ternary weights with one real scale per tensor
against fixed-point activations (the integer engine's int8 path, exact).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from potlut.errors import PotlutError
from potlut.quant import registry, schedule
from potlut.quant.base import Exported, Quantizer
from potlut.quant.iospot import UniformPoTQuantizer
from potlut.quant.lsbinary import lst_fit

RATIOS = (0.5, 0.75, 0.875, 1.0)


def selection_probabilities(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``p_i = (1 / e_i) / sum_j (1 / e_j)`` with ``e_i = |W_i - Q_i|_1 / |W_i|_1`` per filter."""
    w2, q2 = w.reshape(w.shape[0], -1).double(), q.reshape(q.shape[0], -1).double()
    err = (w2 - q2).abs().sum(1) / w2.abs().sum(1).clamp_min(1e-12)
    f = 1.0 / err.clamp_min(1e-12)
    return f / f.sum()


class SQWeightQuantizer(Quantizer):
    """Ternary weights on a random ``ratio`` of the filters, full precision on the rest."""

    scheme = "sq"

    def __init__(self) -> None:
        super().__init__(2)
        self.register_buffer("ratio", torch.tensor(RATIOS[0], dtype=torch.float64))
        self.register_buffer("chosen", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("alpha", torch.zeros((), dtype=torch.float64))
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "chosen"
        if key in state_dict:
            self.chosen = torch.zeros_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def ternary(self, x: torch.Tensor) -> torch.Tensor:
        """The base quantizer: LS-T's optimal ``{0, ±alpha}`` of the whole tensor."""
        alpha, thr = lst_fit(x.abs())
        self.alpha.fill_(alpha)
        self.threshold.fill_(thr)
        return torch.where(x.abs() > thr, torch.sign(x) * alpha, torch.zeros_like(x))

    @torch.no_grad()
    def draw(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Which filters are quantized: ``round(ratio * n)`` drawn by ``p_i`` (Sec. 3.2)."""
        n = x.shape[0]
        k = int(round(float(self.ratio) * n))
        chosen = torch.zeros(n, dtype=torch.bool, device=x.device)
        if k >= n:
            chosen[:] = True
        elif k > 0:
            p = selection_probabilities(x, q).float()
            chosen[torch.multinomial(p, k, replacement=False)] = True
        return chosen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            return x
        q = self.ternary(x.detach())
        full = float(self.ratio) >= 1.0 and bool(self.chosen.all()) and self.chosen.numel()
        if (self.training and torch.is_grad_enabled()) or self.chosen.numel() != x.shape[0] \
                or (float(self.ratio) >= 1.0 and not full):
            self.chosen = self.draw(x.detach(), q)
        mask = self.chosen.reshape(-1, *([1] * (x.dim() - 1)))
        ste = q + (x - x.detach())  # quantized filters: exactly q forward, STE backward
        return torch.where(mask, ste, x)

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        if float(self.ratio) < 1.0:
            raise PotlutError(f"SQ is at ratio {float(self.ratio):.3g}: only a fully quantized "
                              "network (the end of the schedule) can be written")
        q = self.ternary(x.detach().double().cpu())
        return Exported(scheme=self.scheme, bits=2,
                        codes=(q != 0).numpy().astype(np.uint8), negative=(q < 0).numpy(),
                        codebook=np.array([0.0, float(self.alpha)]), exponent=None)


def sq_quantizers(qmodel: nn.Module) -> list[SQWeightQuantizer]:
    return [m for m in qmodel.modules() if isinstance(m, SQWeightQuantizer)]


def ratio_at(epoch: int, epochs: int) -> float:
    """The quantized ratio after ``epoch`` of ``epochs`` QAT epochs: one stage per quarter."""
    stage = min(len(RATIOS) - 1, epoch * len(RATIOS) // max(1, epochs))
    return RATIOS[stage]


def ratio_schedule(qmodel: nn.Module, epochs: int) -> Callable[[int, Any], None]:
    """Epoch-end callback: move every SQ layer to the ratio of the next stage."""
    def set_ratio(r: float) -> None:
        for q in sq_quantizers(qmodel):
            q.ratio.fill_(r)

    set_ratio(ratio_at(0, epochs))
    if epochs <= 1:
        set_ratio(1.0)  # a single epoch: train the fully quantized network
    return lambda epoch, log: set_ratio(ratio_at(epoch, epochs) if epoch < epochs else 1.0)


class SQActQuantizer(UniformPoTQuantizer):
    """SQ's activations: ``b``-bit fixed point (SQ itself quantizes weights only)."""

    scheme = "sq"


def _factory(bits: int, role: str, signed: bool) -> Quantizer:
    if role == "weight":
        return SQWeightQuantizer()
    return SQActQuantizer(max(2, bits), signed=signed)


registry.register("sq", _factory)
schedule.register("sq", ratio_schedule)
