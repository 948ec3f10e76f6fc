"""Quantized layers and model conversion."""

from potlut.nn.convert import LayerSpec, QuantSpec, calibrate, convert, layer_bits, quantize
from potlut.nn.layers import QuantConv2d, QuantLinear, quant_layers, quantizers

__all__ = [
    "LayerSpec", "QuantSpec", "QuantConv2d", "QuantLinear", "calibrate", "convert",
    "layer_bits", "quant_layers", "quantize", "quantizers",
]
