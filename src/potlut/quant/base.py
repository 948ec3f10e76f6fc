"""The interface every quantizer shares: fake-quantize in forward, export codes for the file.

A quantizer is an ``nn.Module``; layers take one for their weight and one for their
input activation (Brevitas style), so schemes compose without flags in the layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class Exported:
    """A quantized tensor as integers: ``value = sign * codebook[code]``.

    ``codes`` are magnitude codes (0 stands for zero where the scheme has a zero),
    ``negative`` holds the sign bits, ``codebook`` the real magnitude of every code
    (scale included) and ``exponent`` the power-of-two scale ``s`` where the scheme
    has one (``alpha = 2**s``), else ``None``.
    """

    scheme: str
    bits: int
    codes: np.ndarray  # uint8/uint16, shape of the tensor
    negative: np.ndarray  # bool, shape of the tensor
    codebook: np.ndarray  # float64, one magnitude per code
    exponent: int | None = None

    def values(self) -> np.ndarray:
        """The real values the codes stand for (float64)."""
        mags = self.codebook[self.codes.astype(np.int64)]
        return np.where(self.negative, -mags, mags)


class Quantizer(nn.Module):
    """Base class: ``forward(x)`` returns fake-quantized ``x``; ``export(x)`` its codes.

    While ``calibrating`` is true, ``forward`` returns ``x`` unchanged and lets the
    quantizer fit its scale to what it sees (``calibrate_from``); this is how the
    MSE-optimal start of METHODS §1.2 is found from a batch through the FP32 model.
    """

    scheme: str = "base"

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = int(bits)
        self.calibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def calibrate_from(self, x: torch.Tensor) -> None:
        """Set the scale from a sample of the tensor (default: nothing to fit)."""

    def export(self, x: torch.Tensor) -> Exported:  # pragma: no cover - abstract
        raise NotImplementedError

    def levels(self) -> torch.Tensor:
        """Representable magnitudes (or values) at unit scale, sorted ascending."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
