"""potlut: power-of-two quantization, compressed model files and P-LUT inference for edge CNNs.

The library in four calls (imported lazily: ``import potlut`` loads no torch, so the file
and engine calls work on an inference-only install)::

    qmodel = potlut.quantize(model, potlut.QuantSpec(bits=4), calibration=images)  # torch
    ...  # QAT: potlut.train.fit(qmodel, bundle, cfg, stage="qat")
    potlut.export(qmodel, "model.potlut", in_shape=(1, 8, 8))                      # torch
    graph = potlut.load("model.potlut")                                            # numpy
    logits = potlut.engine("model.potlut").run(images)                             # numpy
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from potlut.errors import PotlutError

if TYPE_CHECKING:  # pragma: no cover
    from potlut.compress import ModelGraph
    from potlut.infer import IntEngine

__version__ = "0.1.0"
__all__ = [
    "LayerSpec", "PotlutError", "QuantSpec", "__version__", "engine", "export", "load",
    "quantize",
]

_LAZY = {"QuantSpec": "potlut.nn.convert", "LayerSpec": "potlut.nn.convert"}


def __getattr__(name: str) -> Any:
    """Torch-side names (``QuantSpec``, ``LayerSpec``) import torch only when first used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'potlut' has no attribute {name!r}")


def quantize(model: Any, config: Any = None, calibration: Any = None) -> Any:
    """Quantized copy of a PyTorch ``model`` per ``config`` (a :class:`QuantSpec`; default
    4-bit IOS-PoT, 8-bit ends), its scales started from the ``calibration`` batch."""
    from potlut.nn.convert import quantize as _quantize

    return _quantize(model, config, calibration)


def export(qmodel: Any, path: str | Path, in_shape: tuple[int, ...],
           meta: dict[str, Any] | None = None, coder: str = "shuff") -> dict[str, Any]:
    """Write a quantized model (input ``(C, H, W)``) as a .potlut file; return its sizes.

    Its BatchNorm layers are first folded in place to the file's 8-bit block floating point
    (``potlut.nn.export.snap_batchnorm``), so ``qmodel`` then computes what the file holds.
    """
    from potlut.nn.export import compress_model

    return compress_model(qmodel, in_shape, path, meta=meta, coder=coder)


def load(path: str | Path, bits: int | None = None) -> ModelGraph:
    """The :class:`~potlut.compress.ModelGraph` of a .potlut file (checked; numpy only); of a
    multi-bit file, the width ``bits`` (default: its widest)."""
    from potlut.compress.multibit import open_graph

    return open_graph(path, bits)


def engine(model: str | Path | ModelGraph, backend: str = "auto",
           bits: int | None = None) -> IntEngine:
    """The integer-only P-LUT engine of a .potlut file or graph; ``.run(x)`` gives int32
    logits in units of ``2^-F`` (``.scale``). ``bits`` picks a width of a multi-bit file."""
    from potlut.infer.engine import IntEngine

    if not isinstance(model, (str, Path)):
        return IntEngine(model, backend)
    return IntEngine(load(model, bits), backend)
