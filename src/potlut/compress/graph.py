"""A trained quantized model as a plain graph: JSON-able nodes plus named numpy arrays.

Every node is ``{name, op, inputs, attrs}`` in topological order. Weights of quantized
layers are kept as integers (magnitude codes, sign bits, codebook, power-of-two
exponent), exactly what the quantizer exported, so the file, the integer engine and
generated C read one contract and nothing is pickled. The ops, attributes and arrays are
listed in docs/format.md and checked by :mod:`potlut.compress.schema`. numpy only: the
torch side writes graphs with :func:`potlut.nn.export.export_graph`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from potlut.compress.schema import OPS, validate

__all__ = ["OPS", "ModelGraph", "Node", "dequantized_weights"]


@dataclass
class Node:
    """One operation: ``op`` applied to the outputs of the nodes named in ``inputs``."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs), "attrs": self.attrs}


@dataclass
class ModelGraph:
    """Input shape (C, H, W), nodes in topological order, and the arrays they refer to.

    Arrays are named ``<module>.<role>`` (e.g. ``layers.0.conv1.weight.codes``); a node
    of a layer names its module in ``attrs["module"]``. ``meta`` holds free-form facts
    (model name, data set, potlut version) that the engine does not need.
    """

    in_shape: tuple[int, ...]
    nodes: list[Node]
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def layers(self) -> list[Node]:
        """The conv2d / linear nodes, one per module (a module called twice counts once)."""
        seen, out = set(), []
        for n in self.nodes:
            if n.op in ("conv2d", "linear") and n.attrs["module"] not in seen:
                seen.add(n.attrs["module"])
                out.append(n)
        return out

    def quantized_layers(self) -> list[Node]:
        """Layers whose weight is stored as codes (``attrs["weight"]["quantized"]``)."""
        return [n for n in self.layers() if n.attrs["weight"]["quantized"]]

    def architecture(self) -> dict[str, Any]:
        """The JSON part of the graph (everything except the arrays)."""
        return {
            "in_shape": list(self.in_shape),
            "nodes": [n.to_json() for n in self.nodes],
            "meta": self.meta,
        }

    def validate(self) -> None:
        """Check that the graph is well formed; :class:`PotlutFormatError` otherwise.

        Every input names an earlier node, ops are known, the first node is the only
        ``input`` and the last the only ``output``, and every array a layer needs exists
        with the shape its attributes declare.
        """
        validate(self)


# ----------------------------------------------------------------- weights back

def dequantized_weights(graph: ModelGraph) -> dict[str, np.ndarray]:
    """``{module name: float32 weight}`` as the trained model computes it.

    For a quantized layer this is ``sign * codebook[code]``, which equals the layer's
    ``quantized_weight()`` bit for bit (a product of powers of two is exact in float32).
    """
    out = {}
    for n in graph.layers():
        mod = n.attrs["module"]
        if n.attrs["weight"]["quantized"]:
            codes = graph.arrays[f"{mod}.weight.codes"].astype(np.int64)
            mags = graph.arrays[f"{mod}.weight.codebook"][codes]
            vals = np.where(graph.arrays[f"{mod}.weight.negative"], -mags, mags)
            out[mod] = vals.astype(np.float32)
        else:
            out[mod] = graph.arrays[f"{mod}.weight"].astype(np.float32)
    return out

