"""Reference sizes of a .potlut file (METHODS §3): FP32, raw packing, stages 1/2, bound.

The entropy bound is the order-0 bound ``sum over layers (H(codes) * N + N_nonzero) / 8``
with ``H`` the empirical Shannon entropy of a layer's magnitude codes: no code that codes
each weight on its own beats it. The file also holds a model-dependent overhead that
is not coded weights (header, architecture JSON, BatchNorm, biases, codebooks, code
tables); it is measured by compressing the same file without the code and sign streams
(``overhead_bytes``); its fixed part is :data:`HEADER_SIZE` plus the section table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from potlut.compress.container import (
    CODERS,
    HEADER_SIZE,
    SECTION,
    VERSION,
    FileInfo,
    build_body,
    compress_body,
)
from potlut.compress.graph import ModelGraph
from potlut.compress.sharing import code_counts, lookup, raw_bytes

FIXED_OVERHEAD = HEADER_SIZE + 4 + 3 * SECTION.size  # header + section table, before LZMA


def entropy_bits(codes: np.ndarray) -> float:
    """``H(codes) * N``: the empirical order-0 entropy of ``codes`` in bits, in total."""
    c = np.asarray(codes).reshape(-1)
    if c.size == 0:
        return 0.0
    counts = code_counts(c, int(c.max()) + 1)
    p = counts[counts > 0] / c.size
    return float(-(p * np.log2(p)).sum() * c.size)


def layer_bound_bytes(codes: np.ndarray, negative_or_nonzero: np.ndarray) -> float:
    """``(H * N + N_nonzero) / 8`` of one layer (``negative_or_nonzero``: the nonzero mask)."""
    return (entropy_bits(codes) + float(np.count_nonzero(negative_or_nonzero))) / 8


@dataclass
class LayerStats:
    """One row of ``potlut inspect``."""

    name: str
    params: int
    zero_fraction: float
    bits: int
    fp32_bytes: int
    raw_bytes: int
    stage1_bytes: int
    final_bytes: int
    entropy_bound_bytes: float
    compression_rate: float


def _lzma_size(blob: bytes) -> int:
    return len(compress_body(blob)[0]) if blob else 0


def file_stats(graph: ModelGraph, info: FileInfo) -> dict:
    """Per-layer and total sizes of an encoded model (what ``inspect`` prints).

    Per-layer ``final_bytes`` is the layer's stage-1 data LZMA-compressed on its own
    (LZMA works over the whole body, so the rows do not add up to the file exactly);
    the total's ``final_bytes`` is the real file size.
    """
    entries = {e.name: e for e in info.arrays}
    rows: list[LayerStats] = []
    other_fp32 = 0
    for n in graph.nodes:
        if n.op == "batchnorm2d":
            other_fp32 += 8 * n.attrs["num_features"]
    for n in graph.layers():
        mod, w = n.attrs["module"], n.attrs["weight"]
        count = int(math.prod(w["shape"]))
        if n.attrs["bias"]:
            other_fp32 += 4 * int(w["shape"][0])
        if w["quantized"]:
            codes = graph.arrays[f"{mod}.weight.codes"]
            cb = graph.arrays[f"{mod}.weight.codebook"]
            nonzero = lookup(cb != 0, codes)
            e, ecb = entries[f"{mod}.weight"], entries[f"{mod}.weight.codebook"]
            blob = info.data[e.offset : e.offset + e.length]
            blob += info.data[ecb.offset : ecb.offset + ecb.length]
            bits = int(w["bits"])
            raw = raw_bytes(count, bits)
            bound = layer_bound_bytes(codes, nonzero)
            zero = 1.0 - float(nonzero.mean()) if count else 0.0
        else:
            e = entries[f"{mod}.weight"]
            blob = info.data[e.offset : e.offset + e.length]
            bits, raw, bound = 32, 4 * count, 4.0 * count
            zero = float((graph.arrays[f"{mod}.weight"] == 0).mean()) if count else 0.0
        final = _lzma_size(blob)
        rows.append(LayerStats(mod, count, round(zero, 4), bits, 4 * count, raw, len(blob), final,
                               round(bound, 1), round(4 * count / max(final, 1), 2)))
    fp32 = sum(r.fp32_bytes for r in rows) + other_fp32
    bound = sum(r.entropy_bound_bytes for r in rows if r.bits < 32)
    coder = info.coder if info.coder in CODERS else "shuff"
    overhead = overhead_bytes(graph, coder, version=info.version)
    bare = overhead_bytes(graph, coder, tables=False, version=info.version)
    total = {
        "params": sum(r.params for r in rows),
        "fp32_bytes": fp32,
        "raw_bytes": sum(r.raw_bytes for r in rows) + other_fp32,
        "stage1_bytes": info.body_bytes,
        "final_bytes": info.file_bytes,
        "entropy_bound_bytes": round(bound, 1),
        "compression_rate": round(fp32 / info.file_bytes, 2),
    }
    return {
        "layers": [asdict(r) for r in rows],
        "other": {
            "fp32_bytes": other_fp32,
            "stage1_bytes": info.body_bytes - sum(r.stage1_bytes for r in rows),
            "final_bytes": overhead,
        },
        "total": total,
        "header_bytes": HEADER_SIZE,
        "fixed_overhead_bytes": FIXED_OVERHEAD,
        "overhead_bytes": overhead,
        "coder": info.coder,
        "version": info.version,
        # coded weights (file minus overhead) relative to the entropy bound, minus 1
        "bound_gap": round((info.file_bytes - overhead) / bound - 1, 4) if bound else None,
        # the same with the code tables counted as coded weights (what the coder costs)
        "bound_gap_with_tables": round((info.file_bytes - bare) / bound - 1, 4) if bound
        else None,
    }


def overhead_bytes(graph: ModelGraph, coder: str = "shuff", tables: bool = True,
                   version: int = VERSION) -> int:
    """File size of ``graph`` without its weight streams: header, JSON, BN, bias, codebooks.

    Code tables (Huffman code lengths) count as overhead: they describe the code, they
    are not coded weights; ``tables=False`` leaves them out too (so they count as coded
    weights, as in ``bound_gap_with_tables``). ``version``: the layout of that file version.
    """
    body = build_body(graph, coder, skip_weights=True, keep_tables=tables, version=version).body
    return HEADER_SIZE + len(compress_body(body)[0])

