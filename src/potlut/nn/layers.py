"""Quantized Conv2d / Linear: a weight quantizer and an input-activation quantizer each.

The layer quantizes its *input* (the activation feeding it) and its weight, so the
integer engine sees exactly the codes that QAT trained with. Weight normalization
(METHODS §1.1) is applied before the weight quantizer when the scheme asks for it;
the removed affine is absorbed by the BatchNorm that follows during training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from potlut.quant.base import Quantizer

WN_EPS = 1e-5


def normalize_weight(w: torch.Tensor, per_channel: bool = False) -> torch.Tensor:
    """Weight normalization ``(w - mean) / (std + 1e-5)``, per layer (METHODS §1.1) or per
    output channel. Per channel, every filter fills the one power-of-two clipping range
    alike; the per-channel scale it removes is absorbed by the BatchNorm that follows, so
    the integer program is unchanged (it stores the normalized, quantized weights)."""
    if not per_channel:
        return (w - w.mean()) / (w.std() + WN_EPS)
    flat = w.reshape(w.shape[0], -1)
    mean, std = flat.mean(1), flat.std(1)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return (w - mean.view(shape)) / (std.view(shape) + WN_EPS)


class QuantLayerMixin:
    """Shared parts of the quantized layers."""

    weight: nn.Parameter
    weight_quant: Quantizer | None
    act_quant: Quantizer | None
    weight_norm: bool
    wn_per_channel: bool = False  # normalize per output channel (convolutions before a BN)
    frac_bits: int | None = None  # eval on the engine's grid: float64 (potlut.nn.grid)

    def _init_quant(
        self, weight_quant: Quantizer | None, act_quant: Quantizer | None, weight_norm: bool
    ) -> None:
        self.weight_quant = weight_quant
        self.act_quant = act_quant
        self.weight_norm = weight_norm
        self.last_weights: tuple[torch.Tensor, torch.Tensor] | None = None

    def __getstate__(self):
        """Copies and pickles leave out ``last_weights`` (non-leaf tensors of one step)."""
        state = self.__dict__.copy()
        state["last_weights"] = None
        return state

    def normalized_weight(self) -> torch.Tensor:
        """The weight the quantizer sees (normalized when the scheme wants it)."""
        if not self.weight_norm:
            return self.weight
        return normalize_weight(self.weight, self.wn_per_channel)

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight used in forward.

        In training mode the pair (normalized, quantized) of the last forward is kept in
        ``last_weights`` so the distribution loss reuses it instead of recomputing it.
        """
        w = self.normalized_weight()
        q = self.weight_quant(w) if self.weight_quant is not None else w
        self.last_weights = (w, q) if self.training and torch.is_grad_enabled() else None
        return q

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_quant(x) if self.act_quant is not None else x

    def _quant_op(self, x: torch.Tensor, op) -> torch.Tensor:
        """``op(quantized input, quantized weight, bias)``; in float64 on the engine's grid
        (eval), where the sum of power-of-two products is exact (float32 rounds above 24
        bits), with the P-LUT's product rounding where it has one."""
        xq, w, b = self.quantize_input(x), self.quantized_weight(), self.bias
        if self.frac_bits is None or self.training:
            return op(xq, w, b)
        from potlut.nn.grid import table_rounding  # grid imports this module

        xq, w = xq.double(), w.double()
        out = op(xq, w, None if b is None else b.double())
        extra = table_rounding(self, xq, w, lambda a, v: op(a, v, None))
        return out if extra is None else out + extra

    @property
    def bits_w(self) -> int:
        return self.weight_quant.bits if self.weight_quant is not None else 32

    @property
    def bits_a(self) -> int:
        return self.act_quant.bits if self.act_quant is not None else 32


class QuantConv2d(QuantLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` whose weight and input pass through quantizers."""

    def __init__(self, *args, weight_quant=None, act_quant=None, weight_norm=True, **kw):
        super().__init__(*args, **kw)
        self._init_quant(weight_quant, act_quant, weight_norm)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_quant, act_quant, weight_norm: bool):
        """A quantized copy of ``conv`` with the same weights."""
        q = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=conv.bias is not None, padding_mode=conv.padding_mode,
            weight_quant=weight_quant, act_quant=act_quant, weight_norm=weight_norm,
        )
        q.load_state_dict(conv.state_dict(), strict=False)
        return q.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._quant_op(x, self._conv_forward)


class QuantLinear(QuantLayerMixin, nn.Linear):
    """``nn.Linear`` whose weight and input pass through quantizers."""

    def __init__(self, *args, weight_quant=None, act_quant=None, weight_norm=True, **kw):
        super().__init__(*args, **kw)
        self._init_quant(weight_quant, act_quant, weight_norm)

    @classmethod
    def from_float(cls, lin: nn.Linear, weight_quant, act_quant, weight_norm: bool):
        """A quantized copy of ``lin`` with the same weights."""
        q = cls(
            lin.in_features, lin.out_features, bias=lin.bias is not None,
            weight_quant=weight_quant, act_quant=act_quant, weight_norm=weight_norm,
        )
        q.load_state_dict(lin.state_dict(), strict=False)
        return q.to(lin.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._quant_op(x, F.linear)


QUANT_LAYERS = (QuantConv2d, QuantLinear)


def quant_layers(model: nn.Module) -> list[tuple[str, QuantLayerMixin]]:
    """The quantized layers of a model in registration order, with their names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


def quantizers(model: nn.Module) -> list[Quantizer]:
    """Every quantizer module inside ``model``."""
    return [m for m in model.modules() if isinstance(m, Quantizer)]
