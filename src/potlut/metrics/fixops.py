"""FIXOPS (METHODS §5): 1 FIXOPS = one 8x8-bit op = 64 binary ops; a bw x ba MAC costs bw*ba/64."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FP32_BITS = 32


@dataclass
class LayerCost:
    """MACs of one conv/linear layer for one input and the bit-widths it runs at."""

    name: str
    macs: int
    bits_w: int
    bits_a: int

    @property
    def fixops(self) -> float:
        return self.macs * self.bits_w * self.bits_a / 64


def _bits(m: nn.Module) -> tuple[int, int]:
    return getattr(m, "bits_w", FP32_BITS), getattr(m, "bits_a", FP32_BITS)


@torch.no_grad()
def layer_costs(model: nn.Module, in_shape: tuple[int, ...]) -> list[LayerCost]:
    """Count the MACs of every conv/linear layer for one input of shape ``in_shape`` (C,H,W)."""
    costs: list[LayerCost] = []
    hooks = []

    def hook(name):
        def fn(m, inp, out):
            if isinstance(m, nn.Conv2d):
                k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                macs = out[0].numel() * k
            else:
                macs = m.in_features * m.out_features
            costs.append(LayerCost(name, int(macs), *_bits(m)))

        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *in_shape, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return costs


def fixops(model: nn.Module, in_shape: tuple[int, ...]) -> float:
    """Total FIXOPS of one inference (an FP32 MAC costs 32*32/64 = 16)."""
    return float(sum(c.fixops for c in layer_costs(model, in_shape)))


def total_macs(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Conv + linear multiply-accumulates of one inference."""
    return sum(c.macs for c in layer_costs(model, in_shape))
