"""Analytic weight size (METHODS §5): quantized weights at their bit-width, the rest at 32 bits."""

from __future__ import annotations

from torch import nn

from potlut.nn.layers import QUANT_LAYERS


def weight_bits(model: nn.Module) -> int:
    """Bits of every learnable parameter a deployed model keeps (quantizer scales excluded).

    Conv/linear weights of quantized layers count at their weight bit-width; everything
    else (BatchNorm affine, biases, unquantized layers) at 32 bits. Quantizer scales are
    one exponent per tensor and are counted in the file format, not here.
    """
    total = 0
    skip: set[int] = set()
    for m in model.modules():
        if isinstance(m, QUANT_LAYERS) and m.weight_quant is not None:
            total += m.weight.numel() * m.bits_w
            skip.add(id(m.weight))
        for q in (getattr(m, "weight_quant", None), getattr(m, "act_quant", None)):
            if q is not None:
                skip.update(id(p) for p in q.parameters())
    for p in model.parameters():
        if id(p) not in skip:
            total += p.numel() * 32
    return total


def weight_bytes(model: nn.Module) -> float:
    """:func:`weight_bits` in bytes."""
    return weight_bits(model) / 8
