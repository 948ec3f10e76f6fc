"""The one place torch meets the .potlut file: trace a quantized model into a ModelGraph
(``export_graph`` / ``compress_model``) and rebuild the fake-quantized model from one
(``to_torch``).

``export_graph(qmodel, in_shape)`` traces the model with ``torch.fx`` (quantized layers,
BatchNorm, pooling, ReLU and the option-A shortcut stay leaves) and writes every node in
the format's op set (:data:`potlut.compress.schema.OPS`). ``to_torch(graph)`` computes
exactly what the trained quantized model computes: layer weights are the dequantized codes
(bit-identical to ``quantized_weight()``), input activations go through the same quantizer
scheme with its stored state, every other op is the same PyTorch call.
"""

from __future__ import annotations

import math
import operator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from potlut.compress.archjson import default_names
from potlut.compress.bounds import file_stats
from potlut.compress.container import save
from potlut.compress.graph import ModelGraph, Node, dequantized_weights
from potlut.errors import PotlutError, PotlutFormatError
from potlut.models.resnet_cifar import ShortcutA
from potlut.nn.grid import GridBatchNorm2d, engine_grid
from potlut.nn.layers import QuantConv2d, QuantLinear
from potlut.quant import registry
from potlut.quant.base import Quantizer

LEAF_TYPES: tuple[type[nn.Module], ...] = (
    QuantConv2d, QuantLinear, nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU,
    nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AvgPool2d, ShortcutA, nn.Identity, nn.Dropout,
    nn.Flatten,
)



# ----------------------------------------------------------------- torch -> graph

class _Tracer(fx.Tracer):
    """Keeps the layers the engine knows as single nodes instead of tracing into them."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, qualname)


def _ints(v: Any) -> list[int]:
    return [int(x) for x in (v if isinstance(v, (tuple, list)) else (v, v))]


def _shape(node: fx.Node) -> list[int] | None:
    meta = node.meta.get("tensor_meta")
    return [int(s) for s in meta.shape] if meta is not None and hasattr(meta, "shape") else None


def _codebook32(codebook: np.ndarray) -> np.ndarray:
    """Codebook as float32: the values the float32 forward pass computes, exactly.

    A level times a power-of-two scale is exact in float32, and for other schemes the
    float32 forward computes ``round32(level * scale)``, which is what this stores.
    """
    return np.asarray(codebook, dtype=np.float64).astype(np.float32)


def _forward_codebook(m: nn.Module, name: str, codes: np.ndarray,
                      codebook: np.ndarray) -> np.ndarray:
    """The float32 magnitude the layer's forward computes for each code.

    Schemes with a real scale compute ``level * scale`` in float32 (e.g. LQ-Net's basis
    sums, DoReFa's ``(2c - m) / m * max|w|``), which can differ in the last bit from the
    float64 codebook rounded once; the file stores what the forward uses, so dequantized
    weights are bit-identical. A forward whose magnitude is not a function of the code
    cannot be stored as codes and is rejected.
    """
    was = m.training
    m.eval()
    try:
        with torch.no_grad():
            qw = np.abs(m.quantized_weight().detach().cpu().float().numpy())
    finally:
        m.train(was)
    out = codebook.copy()
    flat_c, flat_q = codes.reshape(-1).astype(np.int64), qw.reshape(-1)
    for c in np.unique(flat_c):
        vals = np.unique(flat_q[flat_c == c])
        if vals.size != 1:
            raise PotlutError(
                f"layer {name}: the quantized weights of code {int(c)} take {vals.size} "
                "different values; the weights cannot be stored as codes and a codebook")
        out[c] = vals[0]
    return out


def _quantizer_attrs(q: Quantizer, prefix: str, arrays: dict[str, np.ndarray]) -> dict:
    """Scheme, bits, sign, exponent of an activation quantizer; codebook + state as arrays."""
    ex = q.export(torch.zeros(1))
    arrays[f"{prefix}.codebook"] = _codebook32(ex.codebook)
    state = {k: v for k, v in q.state_dict().items() if torch.is_tensor(v)}
    for k, v in state.items():
        arrays[f"{prefix}.state.{k}"] = v.detach().cpu().float().numpy().reshape(v.shape)
    return {
        "scheme": q.scheme,
        "bits": int(q.bits),
        "signed": bool(getattr(q, "signed", True)),
        "exponent": None if ex.exponent is None else int(ex.exponent),
        "n_codes": int(len(ex.codebook)),
        "state": sorted(state),
    }


def _layer_attrs(m: nn.Module, name: str, arrays: dict[str, np.ndarray]) -> tuple[str, dict]:
    """conv2d / linear node attributes; weight codes (or float weight) and bias into arrays."""
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise PotlutError(
                f"layer {name}: padding {m.padding!r} / mode {m.padding_mode!r} is not "
                "supported (use integer zero padding)"
            )
        op = "conv2d"
        attrs: dict[str, Any] = {
            "in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": _ints(m.kernel_size), "stride": _ints(m.stride),
            "padding": _ints(m.padding), "dilation": _ints(m.dilation), "groups": m.groups,
        }
    else:
        op = "linear"
        attrs = {"in_features": m.in_features, "out_features": m.out_features}
    attrs["bias"] = m.bias is not None
    if m.bias is not None:
        arrays[f"{name}.bias"] = m.bias.detach().cpu().float().numpy()
    wq = getattr(m, "weight_quant", None)
    shape = list(m.weight.shape)
    if wq is not None:
        with torch.no_grad():
            ex = wq.export(m.normalized_weight())
        codes = np.asarray(ex.codes)
        codes = codes.astype(np.uint8 if len(ex.codebook) <= 256 else np.uint16).reshape(shape)
        codebook = _forward_codebook(m, name, codes, _codebook32(ex.codebook))
        nonzero = codebook[codes.astype(np.int64)] != 0
        arrays[f"{name}.weight.codes"] = codes
        negative = np.asarray(ex.negative, dtype=bool).reshape(shape) & nonzero
        arrays[f"{name}.weight.negative"] = negative
        arrays[f"{name}.weight.codebook"] = codebook
        attrs["weight"] = {
            "quantized": True, "scheme": ex.scheme, "bits": int(ex.bits),
            "exponent": None if ex.exponent is None else int(ex.exponent),
            "n_codes": int(len(codebook)), "shape": shape,
        }
    else:
        arrays[f"{name}.weight"] = m.weight.detach().cpu().float().numpy()
        attrs["weight"] = {"quantized": False, "shape": shape}
    aq = getattr(m, "act_quant", None)
    attrs["act"] = None if aq is None else _quantizer_attrs(aq, f"{name}.act", arrays)
    return op, attrs


def fold_batchnorm(m: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as float32 ``(scale, shift)`` with ``y = x * scale + shift``.

    Computed as PyTorch's CPU kernel does (``scale = rsqrt(var + eps) * weight`` in float32,
    ``shift = bias - mean * scale`` rounded once), so a BatchNorm rebuilt from them (mean 0,
    variance 1, eps 0) gives the trained model's outputs bit for bit on the CPU.
    """
    c = m.num_features
    w = m.weight.detach().float().cpu() if m.weight is not None else torch.ones(c)
    b = m.bias.detach().float().cpu() if m.bias is not None else torch.zeros(c)
    scale = torch.rsqrt(m.running_var.detach().float().cpu() + m.eps) * w
    shift = b.double() - m.running_mean.detach().double().cpu() * scale.double()
    return scale.numpy(), shift.float().numpy()


BN_BITS = 8  # significant bits (sign included) of a stored BatchNorm scale / shift array


def block_round(v: np.ndarray, bits: int = BN_BITS) -> np.ndarray:
    """``v`` (float32) rounded to block floating point: integers ``|q| < 2^(bits-1)`` times
    one power of two ``2^e`` for the whole array, the smallest ``e`` the largest value fits.

    Idempotent (a rounded array rounds to itself), and ``q * 2^e`` is what the file's
    ``scaled`` encoding stores in one byte a value (``bits <= 8``).
    """
    v = np.asarray(v, dtype=np.float32)
    big = float(np.abs(v).max(initial=0.0))
    if big == 0.0:
        return v.copy()
    e = math.frexp(big)[1] - (bits - 1)  # big < 2^(e + bits - 1)
    lim = (1 << (bits - 1)) - 1
    q = np.clip(np.round(v.astype(np.float64) / 2.0**e), -lim, lim)
    return (np.ldexp(q, e) + 0.0).astype(np.float32)  # + 0.0: no negative zeros


def snap_batchnorm(model: nn.Module, bits: int = BN_BITS) -> nn.Module:
    """Fold every BatchNorm of ``model`` in place to the affine the file stores.

    Each layer becomes ``y = x * scale + shift`` (mean 0, variance 1, eps 0) with ``scale``
    and ``shift`` :func:`block_round`-ed from :func:`fold_batchnorm`, so the model, the
    file, ``to_torch`` and the integer engine compute with the same numbers. Idempotent; for
    a trained model only (it replaces the running statistics); returns ``model``.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
            scale, shift = (torch.from_numpy(block_round(a, bits)) for a in fold_batchnorm(m))
            with torch.no_grad():
                if m.weight is None:
                    m.weight, m.bias = nn.Parameter(scale), nn.Parameter(shift)
                else:
                    m.weight.copy_(scale)
                    m.bias.copy_(shift)
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
            m.eps = 0.0
    return model


def _module_node(m: nn.Module, name: str, arrays: dict[str, np.ndarray]) -> tuple[str, dict]:
    """Map a leaf module to ``(op, attrs)``; ``("alias", {})`` for no-ops at inference."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        return _layer_attrs(m, name, arrays)
    if isinstance(m, nn.BatchNorm2d):
        if m.running_mean is None or m.running_var is None:
            raise PotlutError(f"layer {name}: BatchNorm without running statistics")
        arrays[f"{name}.scale"], arrays[f"{name}.shift"] = fold_batchnorm(m)
        return "batchnorm2d", {"num_features": m.num_features}
    if isinstance(m, nn.ReLU):
        return "relu", {}
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return "adaptive_avgpool2d", {"output_size": _ints(m.output_size)}
    if isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            raise PotlutError(f"layer {name}: MaxPool2d(return_indices=True) is not supported")
        return "maxpool2d", {
            "kernel_size": _ints(m.kernel_size), "stride": _ints(m.stride or m.kernel_size),
            "padding": _ints(m.padding), "dilation": _ints(m.dilation),
            "ceil_mode": bool(m.ceil_mode),
        }
    if isinstance(m, nn.AvgPool2d):
        return "avgpool2d", {
            "kernel_size": _ints(m.kernel_size), "stride": _ints(m.stride or m.kernel_size),
            "padding": _ints(m.padding), "ceil_mode": bool(m.ceil_mode),
            "count_include_pad": bool(m.count_include_pad),
            "divisor_override": m.divisor_override,
        }
    if isinstance(m, ShortcutA):
        return "shortcut_a", {"stride": int(m.stride), "pad": int(m.pad)}
    if isinstance(m, nn.Flatten):
        return "flatten", {"start_dim": m.start_dim, "end_dim": m.end_dim}
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return "alias", {}
    raise PotlutError(
        f"cannot export module {name!r} of type {type(m).__name__}: not supported by the "
        ".potlut format"
    )


def _arg(node: fx.Node, i: int, key: str, default: Any) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(key, default)


def _norm_dim(d: int, rank: int) -> int:
    return int(d) + rank if int(d) < 0 else int(d)


def _function_node(node: fx.Node) -> tuple[str, dict, list[Any]]:
    """Map a call_function / call_method node to ``(op, attrs, tensor inputs)``.

    Axes are stored non-negative and count the batch axis (0), using the input's rank.
    """
    t = node.target
    x = node.args[0] if node.args else None
    first = x[0] if isinstance(x, (list, tuple)) and x else x
    rank = len(_shape(first) or []) if isinstance(first, fx.Node) else 0
    if t in (operator.add, operator.iadd, torch.add, "add", "add_"):
        others = list(node.args[:2])
        tensors = all(isinstance(a, fx.Node) for a in others)
        if len(others) == 2 and tensors and "alpha" not in node.kwargs:
            return "add", {}, others
        raise PotlutError(f"node {node.name}: only tensor + tensor additions can be exported")
    if t in (torch.flatten, "flatten"):
        s, e = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
        return "flatten", {"start_dim": _norm_dim(s, rank), "end_dim": _norm_dim(e, rank)}, [x]
    if t in (F.relu, torch.relu, "relu", "relu_"):
        return "relu", {}, [x]
    if t in (torch.cat, torch.concat):
        tensors = list(_arg(node, 0, "tensors", []))
        return "cat", {"dim": _norm_dim(_arg(node, 1, "dim", 0), rank)}, tensors
    if t in (torch.mean, "mean"):
        dims = _arg(node, 1, "dim", None)
        if dims is None:
            raise PotlutError(f"node {node.name}: mean over all axes cannot be exported")
        dims = dims if isinstance(dims, (list, tuple)) else [dims]
        dims = [_norm_dim(d, rank) for d in dims]
        return "mean", {"dims": sorted(dims), "keepdim": bool(_arg(node, 2, "keepdim", False))}, [x]
    if t is F.adaptive_avg_pool2d:
        return "adaptive_avgpool2d", {"output_size": _ints(_arg(node, 1, "output_size", 1))}, [x]
    what = getattr(t, "__name__", str(t))
    raise PotlutError(f"cannot export operation {what!r} (node {node.name}): not supported by "
                      "the .potlut format")


def export_graph(
    qmodel: nn.Module, in_shape: tuple[int, ...], meta: dict | None = None
) -> ModelGraph:
    """Trace ``qmodel`` (input ``(C, H, W)``) into a :class:`ModelGraph`.

    The model is evaluated once on zeros in eval mode to record every node's output
    shape (batch axis excluded); its training mode is restored afterwards. Unsupported
    modules or functions raise :class:`PotlutError` naming them.
    """
    in_shape = tuple(int(s) for s in in_shape)
    tracer = _Tracer()
    try:
        g = tracer.trace(qmodel)
    except PotlutError:
        raise
    except Exception as exc:  # fx raises TraceError/TypeError on data-dependent control flow
        raise PotlutError(f"cannot trace the model for export: {exc}") from None
    gm = fx.GraphModule(qmodel, g)
    was_training = qmodel.training
    qmodel.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros((1, *in_shape)))
    finally:
        qmodel.train(was_training)
    modules = dict(qmodel.named_modules())
    arrays: dict[str, np.ndarray] = {}
    nodes: list[Node] = []
    alias: dict[str, str] = {}
    done_modules: dict[str, tuple[str, dict]] = {}

    def ref(a: Any) -> str:
        if not isinstance(a, fx.Node):
            raise PotlutError(f"constant operand {a!r} cannot be exported")
        return alias.get(a.name, a.name)

    for n in g.nodes:
        shape = _shape(n)
        if n.op == "placeholder":
            if nodes:
                raise PotlutError("only models with one input can be exported")
            nodes.append(Node(n.name, "input", [], {"shape": list(in_shape)}))
            continue
        if n.op == "output":
            outs = n.args[0] if isinstance(n.args[0], (tuple, list)) else [n.args[0]]
            nodes.append(Node("output", "output", [ref(o) for o in outs], {}))
            continue
        if n.op == "call_module":
            target = str(n.target)
            if target not in done_modules:
                done_modules[target] = _module_node(modules[target], target, arrays)
            op, attrs = done_modules[target]
            attrs = dict(attrs)
            inputs = [n.args[0]]
            if op in ("conv2d", "linear", "batchnorm2d"):
                attrs = {"module": target, **attrs}
            if op == "flatten":  # nn.Flatten keeps end_dim=-1; the format stores axes >= 0
                rank = len(_shape(n.args[0]) or ())
                attrs = {k: _norm_dim(v, rank) for k, v in attrs.items()}
        elif n.op in ("call_function", "call_method"):
            op, attrs, inputs = _function_node(n)
        else:
            raise PotlutError(f"cannot export node {n.name} ({n.op} {n.target}): parameters "
                              "must be used through modules")
        if op == "alias":
            alias[n.name] = ref(inputs[0])
            continue
        attrs["shape"] = shape[1:] if shape else None
        nodes.append(Node(n.name, op, [ref(a) for a in inputs], attrs))
    graph = ModelGraph(in_shape, _default_named(nodes), arrays, dict(meta or {}))
    graph.validate()
    return graph



def _default_named(nodes: list[Node]) -> list[Node]:
    """The nodes under the format's default names (module path, else op, numbered from the
    second use; docs/format.md §2), which the file then need not store; fx's names where
    those would repeat."""
    names = default_names([(n.op, n.attrs) for n in nodes])
    if len(set(names)) < len(names):
        return nodes
    new = {n.name: name for n, name in zip(nodes, names, strict=True)}
    return [Node(new[n.name], n.op, [new[i] for i in n.inputs], n.attrs) for n in nodes]


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
    ``header_bytes``, ``coder`` and ``path``. BatchNorm is first folded in place to the
    file's precision (:func:`snap_batchnorm`), so ``qmodel`` computes what the file holds.
    """
    graph = export_graph(snap_batchnorm(qmodel), in_shape, meta)
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


# ----------------------------------------------------------------- graph -> torch

def shortcut_a(x: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """The format's ``shortcut_a`` op: every ``stride``-th pixel, ``pad`` zero channels split
    before/after (floor half before), as ResNet-20's option-A shortcut."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    if pad:
        x = F.pad(x, (0, 0, 0, 0, pad // 2, pad - pad // 2))
    return x


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
    if a["weight"]["quantized"]:  # the grid eval forward rounds products as the table does
        m.stored_codes = (graph.arrays[f"{mod}.weight.codebook"],
                          graph.arrays[f"{mod}.weight.codes"], a["weight"]["scheme"])
    return m


def _batchnorm(graph: ModelGraph, node: Node) -> nn.Module:
    """The folded BatchNorm as PyTorch's own module (mean 0, variance 1, eps 0): its CPU
    kernel then computes ``x * scale + shift`` exactly as the trained model's did."""
    mod, c = node.attrs["module"], node.attrs["num_features"]
    bn = GridBatchNorm2d(c, eps=0.0)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(graph.arrays[f"{mod}.scale"]))
        bn.bias.copy_(torch.from_numpy(graph.arrays[f"{mod}.shift"]))
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
        engine_grid(self)

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
            return shortcut_a(x, a["stride"], a["pad"])
        raise PotlutFormatError(f"node {n.name}: op {op!r} cannot be run")


def to_torch(graph: ModelGraph) -> GraphModel:
    """The fake-quantized model the graph describes, in eval mode."""
    return GraphModel(graph)
