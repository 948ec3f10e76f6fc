"""ALQ: adaptive loss-aware quantization into multi-bit binary bases (scheme ``alq``).

Paper: Qu, Zhou, Cheng, Thiele, "Adaptive Loss-aware Quantization for Multi-bit Networks",
CVPR 2020.

Follows:
- Eq. (1): every group ``g`` of ``GROUP`` consecutive weights of a layer is
  ``w_g ~ sum_{i < I_g} alpha_gi b_gi`` with ``b_gi in {-1, +1}^n`` and its own bit-width
  ``I_g`` (0 allowed: the group is pruned), so the average below 1 bit is reachable.
- Initialization (Sec. 4.1, after Xu et al. 2018): greedy residual binarization, then
  alternating refinement (nearest combination of the bases, least-squares ``alpha``).
- Bit-width reduction by the loss (Sec. 4.2, Eq. (9)): removing the last basis of a group
  changes the weights by ``d = -alpha b``; its loss increase is estimated to second order
  ``g^T d + 1/2 d^T H d`` with ``g`` the running mean gradient and ``H`` the diagonal
  ``sqrt`` of the running mean squared gradient (Adam's second moment, as the paper uses).
  The bases whose removal costs least go first, across all layers at once.
- Smooth reduction and iterative trained quantization (Sec. 4.3): over the first half of
  the QAT epochs the average bit-width falls linearly from the initial ``I_max`` to
  ``TARGET_BITS`` (0.8), one step per epoch, training in between; the second half
  fine-tunes at the final bit-widths.

Departures: the ``alpha`` of a group are refitted in closed form (least squares) in every
forward pass instead of by the paper's loss-aware projected Newton step; the binary bases
are the nearest combination of the current ``alpha`` rather than a loss-aware update; the
gradient reaches the latent float weights by the straight-through estimator. Activations
are not part of ALQ (the paper quantizes weights): here they are ``b``-bit fixed point.

Integer-only: no, and no ``.potlut`` file: every group of 64 weights has its own real
basis, where the file holds one codebook per tensor; the engine cannot tabulate it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from potlut.errors import PotlutError
from potlut.quant import registry, schedule
from potlut.quant.base import Exported, Quantizer
from potlut.quant.iospot import UniformPoTQuantizer, check_bits

GROUP = 64
TARGET_BITS = 0.8
REFINE_STEPS = 2
GRAD_MOMENTUM = 0.9
ALPHA_BITS = 32  # storage of one basis scale (counted in the weight size)


def split_groups(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` flattened into ``[G, group]`` rows (zero padded) and the mask of real entries."""
    flat = w.reshape(-1)
    n_groups = -(-flat.numel() // group)
    pad = n_groups * group - flat.numel()
    rows = torch.cat([flat, flat.new_zeros(pad)]).reshape(n_groups, group)
    valid = torch.ones(n_groups * group, dtype=torch.bool, device=w.device)
    if pad:
        valid[-pad:] = False
    return rows, valid.reshape(n_groups, group)


def fit_bases(rows: torch.Tensor, valid: torch.Tensor, nbits: torch.Tensor,
              imax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha [G, imax], b [G, n, imax])`` approximating every row with its ``nbits`` bases.

    Greedy residual start, then ``REFINE_STEPS`` of (nearest combination, least squares);
    both steps can only lower the squared error. Inactive bases have ``alpha = b = 0``.
    """
    w = rows.double() * valid
    vf = valid.double()
    active = (torch.arange(imax, device=w.device)[None, :] < nbits[:, None].long()).double()
    alpha = w.new_zeros(rows.shape[0], imax)
    b = w.new_zeros(*rows.shape, imax)
    r = w.clone()
    count = vf.sum(1).clamp_min(1)
    for i in range(imax):
        bi = torch.where(r >= 0, 1.0, -1.0).double() * vf
        ai = (r.abs() * vf).sum(1) / count * active[:, i]
        alpha[:, i], b[..., i] = ai, bi * active[:, i:i + 1]
        r = r - ai[:, None] * bi
    combos = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=imax)),
                          dtype=torch.float64, device=w.device)  # [C, imax]
    for _ in range(REFINE_STEPS):
        levels = alpha @ combos.T  # [G, C]
        idx = (w[..., None] - levels[:, None, :]).abs().argmin(-1)  # [G, n]
        b = combos[idx] * active[:, None, :] * vf[..., None]
        gram = b.transpose(1, 2) @ b + torch.diag_embed(1 - active)
        rhs = (b.transpose(1, 2) @ w[..., None])[..., 0]
        alpha = (torch.linalg.pinv(gram) @ rhs[..., None])[..., 0] * active
    return alpha, b


class ALQWeightQuantizer(Quantizer):
    """Per-group multi-bit binary bases with per-group bit-widths ``nbits`` (0..imax)."""

    scheme = "alq"

    def __init__(self, bits: int = 2, group: int = GROUP) -> None:
        super().__init__(check_bits(bits, 1, 4))
        self.group = group
        self.register_buffer("nbits", torch.zeros(0, dtype=torch.int8))
        self.register_buffer("numel", torch.zeros((), dtype=torch.long))  # of the weight
        self.g_avg: torch.Tensor | None = None
        self.h_avg: torch.Tensor | None = None

    # the bit-width of a tensor is its average over the weights (fractional below 1 bit)
    @property
    def bits(self) -> float:
        if self.nbits.numel() == 0:
            return self.imax
        return round(float(self._bit_total()) / int(self.numel), 4)

    @bits.setter
    def bits(self, value: int) -> None:
        self.imax = int(value)

    def _bit_total(self) -> int:
        """Sum over weights of their bit-width (the last group may be shorter)."""
        sizes = torch.full((self.nbits.numel(),), self.group, dtype=torch.long)
        sizes[-1] = int(self.numel) - self.group * (self.nbits.numel() - 1)
        return int((self.nbits.long().cpu() * sizes).sum())

    def _ensure(self, x: torch.Tensor) -> None:
        n_groups = -(-x.numel() // self.group)
        self.numel.fill_(x.numel())
        if self.nbits.numel() != n_groups:
            self.nbits = torch.full((n_groups,), self.imax, dtype=torch.int8, device=x.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "nbits"
        if key in state_dict:
            self.nbits = torch.zeros_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, alpha, b)``: the quantized tensor and its group bases."""
        self._ensure(x)
        rows, valid = split_groups(x.detach(), self.group)
        alpha, b = fit_bases(rows, valid, self.nbits.to(rows.device), self.imax)
        q = (b * alpha[:, None, :]).sum(-1).reshape(-1)[: x.numel()]
        return q.reshape(x.shape).to(x.dtype), alpha, b

    def calibrate_from(self, x: torch.Tensor) -> None:
        self._ensure(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        q = self.quantize(x)[0]
        out = q + (x - x.detach())  # straight-through: exactly q forward
        if self.training and out.requires_grad:
            out.register_hook(self._record_grad)
        return out

    @torch.no_grad()
    def _record_grad(self, g: torch.Tensor) -> None:
        """Running mean of the loss gradient and of its square (for Eq. (9))."""
        g = g.detach().double()
        if self.g_avg is None or self.g_avg.shape != g.shape:
            self.g_avg, self.h_avg = g.clone(), g * g
        else:
            self.g_avg.mul_(GRAD_MOMENTUM).add_((1 - GRAD_MOMENTUM) * g)
            self.h_avg.mul_(GRAD_MOMENTUM).add_((1 - GRAD_MOMENTUM) * g * g)

    @torch.no_grad()
    def removal_cost(self, x: torch.Tensor) -> torch.Tensor:
        """Estimated loss increase ``g^T d + 1/2 d^T H d`` of dropping each group's last
        basis (``d = -alpha b``); ``inf`` for groups already at 0 bits."""
        _, alpha, b = self.quantize(x)
        nb = self.nbits.long().to(alpha.device)
        last = (nb - 1).clamp_min(0)
        g_idx = torch.arange(alpha.shape[0], device=alpha.device)
        d = -(alpha[g_idx, last][:, None] * b[g_idx, :, last])  # [G, n]
        if self.g_avg is None:
            cost = (d * d).sum(1)
        else:
            g, _ = split_groups(self.g_avg.to(d), self.group)
            h, _ = split_groups(self.h_avg.to(d).sqrt(), self.group)
            cost = (g * d).sum(1) + 0.5 * (h * d * d).sum(1)
        return torch.where(nb > 0, cost, torch.full_like(cost, float("inf")))

    def side_bits(self, shape: tuple[int, ...]) -> int:
        """Storage of the basis scales: one float32 per active basis of every group."""
        return ALPHA_BITS * int(self.nbits.long().sum())

    def export(self, x: torch.Tensor) -> Exported:
        raise PotlutError("ALQ cannot be written as a .potlut file: every group of "
                          f"{self.group} weights has its own real basis, the file holds one "
                          "codebook per tensor")

    def extra_repr(self) -> str:
        return f"imax={self.imax}, group={self.group}, avg_bits={self.bits}"


def alq_layers(qmodel: nn.Module) -> list[tuple[nn.Module, ALQWeightQuantizer]]:
    from potlut.nn.layers import quant_layers

    return [(m, m.weight_quant) for _, m in quant_layers(qmodel)
            if isinstance(m.weight_quant, ALQWeightQuantizer)]


def average_bits(qmodel: nn.Module) -> float:
    """Average bit-width over every ALQ-quantized weight of the model."""
    layers = alq_layers(qmodel)
    total = sum(q._bit_total() for _, q in layers)
    count = sum(m.weight.numel() for m, _ in layers)
    return total / count if count else 0.0


@torch.no_grad()
def reduce_to(qmodel: nn.Module, goal: float) -> None:
    """Drop the cheapest last bases, across all layers, until the average is ``<= goal``."""
    layers = alq_layers(qmodel)
    count = sum(m.weight.numel() for m, _ in layers)
    while layers and average_bits(qmodel) > goal + 1e-12:
        costs = [q.removal_cost(m.normalized_weight()).cpu() for m, q in layers]
        order = torch.argsort(torch.cat(costs))
        owner = torch.cat([torch.full((c.numel(),), i) for i, c in enumerate(costs)])
        local = torch.cat([torch.arange(c.numel()) for c in costs])
        flat_cost = torch.cat(costs)
        excess = (average_bits(qmodel) - goal) * count
        removed = 0
        for j in order.tolist():
            if not torch.isfinite(flat_cost[j]) or excess <= 0:
                break
            q = layers[int(owner[j])][1]
            g = int(local[j])
            size = min(q.group, int(q.numel) - g * q.group)
            q.nbits[g] -= 1
            excess -= size
            removed += 1
        if removed == 0:
            break


def reduction_schedule(qmodel: nn.Module, epochs: int,
                       target: float = TARGET_BITS) -> Callable[[int, Any], None]:
    """Epoch-end callback: linear reduction to ``target`` bits over the first half of QAT."""
    steps = max(1, epochs // 2)
    layers = alq_layers(qmodel)
    start = max((q.imax for _, q in layers), default=0)

    def on_epoch_end(epoch: int, log: Any) -> None:
        if epoch <= steps:
            reduce_to(qmodel, start + (target - start) * epoch / steps)

    return on_epoch_end


class ALQActQuantizer(UniformPoTQuantizer):
    """ALQ's activations: ``b``-bit fixed point (ALQ itself quantizes weights only)."""

    scheme = "alq"


def _factory(bits: int, role: str, signed: bool) -> Quantizer:
    if role == "weight":
        return ALQWeightQuantizer(min(int(bits), 4))  # 2^4 combinations per group at most
    return ALQActQuantizer(max(2, bits), signed=signed)


registry.register("alq", _factory)
schedule.register("alq", reduction_schedule)
