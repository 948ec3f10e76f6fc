"""The int8 baseline of a model: the same network with uniform int8 weights and
activations and int8 x int8 -> int32 multiply-accumulates (the style of TFLite Micro /
CMSIS-NN), the reference every microcontroller figure is compared with.

Every conv/linear layer of the graph gets 8-bit fixed-point weights (the file's
dequantized weights rounded to a symmetric power-of-two step, 127 levels) and 8-bit
fixed-point inputs over the same range as its original activation quantizer; BatchNorm,
bias and the graph are unchanged. Lowered by the same :func:`potlut.infer.program.lower`
and printed by the same C printer, so only the arithmetic of the layers differs.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from potlut.compress.graph import ModelGraph

BITS = 8


def _pot_step(top: float, levels: int) -> float:
    """Smallest power-of-two step with ``levels * step >= top`` (``top > 0``)."""
    return 2.0 ** math.ceil(math.log2(top / levels)) if top > 0 else 1.0


def int8_graph(graph: ModelGraph) -> ModelGraph:
    """``graph`` with every layer's weights and input quantizer made 8-bit fixed point."""
    g = ModelGraph(tuple(graph.in_shape), [copy.deepcopy(n) for n in graph.nodes],
                   dict(graph.arrays), dict(graph.meta))
    for n in g.layers():
        mod, a = n.attrs["module"], n.attrs
        w = a["weight"]
        if w["quantized"]:
            cb = graph.arrays[f"{mod}.weight.codebook"].astype(np.float64)
            real = cb[graph.arrays[f"{mod}.weight.codes"].astype(np.int64)]
            neg = graph.arrays[f"{mod}.weight.negative"].astype(bool)
        else:
            real = np.abs(graph.arrays[f"{mod}.weight"].astype(np.float64))
            neg = graph.arrays[f"{mod}.weight"] < 0
        levels = 2 ** (BITS - 1) - 1
        step = _pot_step(float(real.max(initial=0.0)), levels)
        codes = np.clip(np.round(real / step), 0, levels).astype(np.uint8)
        g.arrays[f"{mod}.weight.codes"] = codes
        g.arrays[f"{mod}.weight.negative"] = neg & (codes > 0)
        g.arrays[f"{mod}.weight.codebook"] = (np.arange(levels + 1) * step).astype(np.float32)
        a["weight"] = {"quantized": True, "scheme": "fixedpoint", "bits": BITS,
                       "exponent": int(round(math.log2(step))) + BITS - 1,
                       "n_codes": levels + 1, "shape": list(w["shape"])}
        act = a.get("act")
        if act is None:
            continue
        acb = graph.arrays[f"{mod}.act.codebook"].astype(np.float64)
        n_codes = 2 ** (BITS - 1) if act["signed"] else 2**BITS
        astep = _pot_step(float(acb.max(initial=0.0)), n_codes - 1)
        g.arrays[f"{mod}.act.codebook"] = (np.arange(n_codes) * astep).astype(np.float32)
        for k in act.get("state", []):
            g.arrays.pop(f"{mod}.act.state.{k}", None)
        a["act"] = {"scheme": "fixedpoint", "bits": BITS, "signed": bool(act["signed"]),
                    "exponent": int(round(math.log2(astep))) + BITS - 1, "n_codes": n_codes,
                    "state": []}
    g.meta = {**g.meta, "baseline": "int8"}
    return g
