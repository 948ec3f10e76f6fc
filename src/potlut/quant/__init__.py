"""Quantizers: one module per scheme, all with the :class:`Quantizer` interface."""

from potlut.quant.base import Exported, Quantizer
from potlut.quant.iospot import IOSPoTQuantizer, UniformPoTQuantizer, pot_levels

__all__ = ["Exported", "IOSPoTQuantizer", "Quantizer", "UniformPoTQuantizer", "pot_levels"]
