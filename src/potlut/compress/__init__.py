"""The .potlut model file: model graph, weight sharing + S-Huff, LZMA container, bounds.

``compress_model(qmodel, in_shape, path)`` is the one call a pipeline needs: export the
trained quantized model, write the file atomically, and return its sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from potlut.compress.bounds import file_stats
from potlut.compress.container import CODERS, FileInfo, decode, encode, load, read, save
from potlut.compress.graph import ModelGraph, Node, dequantized_weights, export_graph
from potlut.compress.torch_model import to_torch

__all__ = [
    "CODERS", "FileInfo", "ModelGraph", "Node", "compress_model", "decode", "dequantized_weights",
    "encode", "export_graph", "file_stats", "load", "read", "save", "to_torch",
]


def compress_model(
    qmodel: nn.Module,
    in_shape: tuple[int, ...],
    path: str | Path,
    meta: dict[str, Any] | None = None,
    coder: str = "shuff",
) -> dict[str, Any]:
    """Write ``qmodel`` as a .potlut file at ``path``; return its sizes for a report.

    Keys: ``file_bytes``, ``entropy_bound_bytes``, ``compression_rate`` (FP32 bytes /
    file bytes), ``fp32_bytes``, ``raw_bytes``, ``stage1_bytes``, ``overhead_bytes``
    (header, architecture, BatchNorm, bias, codebooks: the file without weight streams),
    ``header_bytes``, ``coder`` and ``path``.
    """
    graph = export_graph(qmodel, in_shape, meta)
    info = save(graph, path, coder)
    stats = file_stats(graph, info)
    t = stats["total"]
    return {
        "file_bytes": info.file_bytes,
        "entropy_bound_bytes": t["entropy_bound_bytes"],
        "compression_rate": t["compression_rate"],
        "fp32_bytes": t["fp32_bytes"],
        "raw_bytes": t["raw_bytes"],
        "stage1_bytes": info.body_bytes,
        "overhead_bytes": stats["overhead_bytes"],
        "header_bytes": stats["header_bytes"],
        "coder": coder,
        "path": str(path),
    }
