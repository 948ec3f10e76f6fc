"""Rebuild the fake-quantized PyTorch model from a :class:`ModelGraph` (e.g. a loaded file).

The rebuilt model computes exactly what the trained quantized model computes: layer
weights are the dequantized codes (bit-identical to ``quantized_weight()``), input
activations go through the same quantizer scheme with its stored state, and every other
op is the same PyTorch call. So accuracy measured on the file equals accuracy measured on
the trained model, and the integer engine can be compared against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from potlut.compress.graph import ModelGraph, Node, dequantized_weights
from potlut.errors import PotlutFormatError
from potlut.models.resnet_cifar import ShortcutA
from potlut.nn.layers import QuantConv2d, QuantLinear
from potlut.quant import registry


def _key(module: str) -> str:
    return module.replace(".", "__") or "_root"


def _act_quant(graph: ModelGraph, node: Node) -> nn.Module | None:
    act = node.attrs["act"]
    if act is None:
        return None
    mod = node.attrs["module"]
    try:
        q = registry.make(act["scheme"], act["bits"], "act", act["signed"])
    except Exception as exc:  # unknown scheme or bad bits in a (checksummed) file
        msg = f"layer {mod}: cannot rebuild activation quantizer: {exc}"
        raise PotlutFormatError(msg) from None
    state = {k: torch.from_numpy(graph.arrays[f"{mod}.act.state.{k}"].copy()) for k in act["state"]}
    try:
        q.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise PotlutFormatError(f"layer {mod}: activation quantizer state: {exc}") from None
    return q


def _layer(graph: ModelGraph, node: Node, weight: torch.Tensor) -> nn.Module:
    a, mod = node.attrs, node.attrs["module"]
    aq = _act_quant(graph, node)
    if node.op == "conv2d":
        m: nn.Module = QuantConv2d(
            a["in_channels"], a["out_channels"], tuple(a["kernel_size"]), stride=tuple(a["stride"]),
            padding=tuple(a["padding"]), dilation=tuple(a["dilation"]), groups=a["groups"],
            bias=a["bias"], weight_quant=None, act_quant=aq, weight_norm=False,
        )
    else:
        m = QuantLinear(a["in_features"], a["out_features"], bias=a["bias"],
                        weight_quant=None, act_quant=aq, weight_norm=False)
    with torch.no_grad():
        if tuple(m.weight.shape) != tuple(weight.shape):
            raise PotlutFormatError(f"layer {mod}: weight shape {list(weight.shape)} does not "
                                    f"fit the layer geometry {list(m.weight.shape)}")
        m.weight.copy_(weight)
        if a["bias"]:
            m.bias.copy_(torch.from_numpy(graph.arrays[f"{mod}.bias"]))
    return m


def _batchnorm(graph: ModelGraph, node: Node) -> nn.Module:
    mod, c = node.attrs["module"], node.attrs["num_features"]
    bn = nn.BatchNorm2d(c, eps=node.attrs["eps"])
    with torch.no_grad():
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, k).copy_(torch.from_numpy(graph.arrays[f"{mod}.{k}"]))
    return bn


class GraphModel(nn.Module):
    """Runs the nodes of a :class:`ModelGraph` in order with PyTorch ops."""

    def __init__(self, graph: ModelGraph) -> None:
        super().__init__()
        graph.validate()
        self.graph = graph
        self.layers = nn.ModuleDict()
        weights = dequantized_weights(graph)
        for n in graph.nodes:
            mod = n.attrs.get("module")
            if mod is None or _key(mod) in self.layers:
                continue
            if n.op in ("conv2d", "linear"):
                self.layers[_key(mod)] = _layer(graph, n, torch.from_numpy(weights[mod]))
            elif n.op == "batchnorm2d":
                self.layers[_key(mod)] = _batchnorm(graph, n)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env: dict[str, torch.Tensor] = {}
        for n in self.graph.nodes:
            ins = [env[i] for i in n.inputs]
            if n.op == "input":
                env[n.name] = x
            elif n.op == "output":
                return ins[0] if len(ins) == 1 else tuple(ins)
            else:
                env[n.name] = self._apply(n, ins)
        raise PotlutFormatError("graph has no output node")  # unreachable after validate()

    def _apply(self, n: Node, ins: list[torch.Tensor]) -> torch.Tensor:
        a, x = n.attrs, ins[0]
        op = n.op
        if op in ("conv2d", "linear", "batchnorm2d"):
            return self.layers[_key(a["module"])](x)
        if op == "relu":
            return F.relu(x)
        if op == "add":
            return ins[0] + ins[1]
        if op == "cat":
            return torch.cat(ins, dim=a["dim"])
        if op == "flatten":
            return torch.flatten(x, a["start_dim"], a["end_dim"])
        if op == "mean":
            return x.mean(dim=a["dims"], keepdim=a["keepdim"])
        if op == "adaptive_avgpool2d":
            return F.adaptive_avg_pool2d(x, a["output_size"])
        if op == "maxpool2d":
            return F.max_pool2d(x, a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                                ceil_mode=a["ceil_mode"])
        if op == "avgpool2d":
            return F.avg_pool2d(x, a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                                a["count_include_pad"], a["divisor_override"])
        if op == "shortcut_a":
            sc = ShortcutA(0, 0, a["stride"])
            sc.pad = a["pad"]
            return sc(x)
        raise PotlutFormatError(f"node {n.name}: op {op!r} cannot be run")


def to_torch(graph: ModelGraph) -> GraphModel:
    """The fake-quantized model the graph describes, in eval mode."""
    return GraphModel(graph)
