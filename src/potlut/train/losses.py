"""Distribution loss with a learnable coefficient (METHODS §2).

``D_l = mean((w_n - q(w_n))^2) / mean(w_n^2)`` per quantized layer and
``L = L_task + exp(-s) * sum_l D_l + s``. The ``+ s`` keeps ``lambda = exp(-s)`` from
collapsing to 0; at the optimum ``lambda = 1 / sum_l D_l``.

Departure from a literal reading: ``q(w_n)`` is a constant target (no gradient). With the
STE, ``d q/d w_n = 1`` inside the clipping range, which would make the gradient of ``D_l``
vanish exactly where the loss is meant to pull weights toward their levels. The clipping
scales are left to the task loss: the PACT-style ``d q/d alpha`` is only an approximation,
and with ``lambda`` in the hundreds it pushed an 8-bit scale the wrong way by two octaves.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from potlut.errors import PotlutConfigError
from potlut.nn.layers import quant_layers

MODES = ("off", "fixed", "learnable")


def layer_mismatch(layer) -> torch.Tensor:
    """Scale-free quantization mismatch ``D_l`` of one quantized layer's weight.

    Reuses the weights of the layer's last training forward when there is one.
    """
    if layer.last_weights is not None:
        wn, q = layer.last_weights
        q = q.detach()  # the target: nearest levels at the current scale
    else:
        wn = layer.normalized_weight()
        with torch.no_grad():
            q = layer.weight_quant(wn)
    return ((wn - q) ** 2).mean() / (wn.detach() ** 2).mean().clamp_min(1e-12)


class DistributionLoss(nn.Module):
    """The regularizer term; ``mode`` is ``off``, ``fixed`` or ``learnable`` (default)."""

    def __init__(self, mode: str = "learnable", lam: float = 1.0) -> None:
        super().__init__()
        if mode not in MODES:
            raise PotlutConfigError(f"distribution loss mode must be one of {MODES}, got {mode!r}")
        if lam <= 0:
            raise PotlutConfigError(f"distribution loss lambda must be > 0, got {lam}")
        self.mode = mode
        self.s = nn.Parameter(torch.tensor(-math.log(lam)), requires_grad=mode == "learnable")

    @property
    def lam(self) -> float:
        """Current coefficient ``exp(-s)``."""
        return float(torch.exp(-self.s.detach()))

    def forward(self, model: nn.Module) -> torch.Tensor:
        if self.mode == "off":
            return self.s.new_zeros(())
        layers = [m for _, m in quant_layers(model) if m.weight_quant is not None]
        if not layers:
            return self.s.new_zeros(())
        total = torch.stack([layer_mismatch(m) for m in layers]).sum()
        if self.mode == "fixed":
            return torch.exp(-self.s.detach()) * total
        return torch.exp(-self.s) * total + self.s
