"""A trained quantized model as a plain graph: JSON-able nodes plus named numpy arrays.

``export_graph(qmodel, in_shape)`` traces the model with ``torch.fx`` (quantized layers,
BatchNorm, pooling, ReLU and the option-A shortcut stay leaves) and writes every node as
``{name, op, inputs, attrs}`` in topological order. Weights of quantized layers are kept
as integers (magnitude codes, sign bits, codebook, power-of-two exponent), exactly what
the quantizer exported, so the file, the integer engine and generated C read one
contract and nothing is pickled. The ops, attributes and arrays are listed in
docs/format.md.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from potlut.errors import PotlutError, PotlutFormatError
from potlut.models.resnet_cifar import ShortcutA
from potlut.nn.layers import QuantConv2d, QuantLinear
from potlut.quant.base import Quantizer

# op name -> input arity (None: any number >= 1); the single source of truth for validation
OPS: dict[str, int | None] = {
    "input": 0,
    "output": None,
    "conv2d": 1,
    "linear": 1,
    "batchnorm2d": 1,
    "relu": 1,
    "maxpool2d": 1,
    "avgpool2d": 1,
    "adaptive_avgpool2d": 1,
    "shortcut_a": 1,
    "flatten": 1,
    "mean": 1,
    "add": 2,
    "cat": None,
}

LEAF_TYPES: tuple[type[nn.Module], ...] = (
    QuantConv2d, QuantLinear, nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU,
    nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AvgPool2d, ShortcutA, nn.Identity, nn.Dropout,
    nn.Flatten,
)


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
        _validate(self)


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


def _module_node(m: nn.Module, name: str, arrays: dict[str, np.ndarray]) -> tuple[str, dict]:
    """Map a leaf module to ``(op, attrs)``; ``("alias", {})`` for no-ops at inference."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        return _layer_attrs(m, name, arrays)
    if isinstance(m, nn.BatchNorm2d):
        if m.running_mean is None or m.running_var is None:
            raise PotlutError(f"layer {name}: BatchNorm without running statistics")
        c = m.num_features
        arrays[f"{name}.weight"] = (
            m.weight.detach().float().numpy() if m.weight is not None else np.ones(c, np.float32)
        )
        arrays[f"{name}.bias"] = (
            m.bias.detach().float().numpy() if m.bias is not None else np.zeros(c, np.float32)
        )
        arrays[f"{name}.running_mean"] = m.running_mean.detach().float().numpy()
        arrays[f"{name}.running_var"] = m.running_var.detach().float().numpy()
        return "batchnorm2d", {"num_features": c, "eps": float(m.eps)}
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
    graph = ModelGraph(in_shape, nodes, arrays, dict(meta or {}))
    graph.validate()
    return graph


# ----------------------------------------------------------------- validation

def _fail(msg: str) -> None:
    raise PotlutFormatError(f"invalid model graph: {msg}")


def _kind_ok(v: Any, kind: str) -> bool:
    is_int = isinstance(v, int) and not isinstance(v, bool)
    return {
        "int": is_int and v >= 0,
        "int?": v is None or (is_int and v > 0),
        "int2": _is_int_list(v, 2) and all(x >= 0 for x in v),
        "ints": _is_int_list(v) and all(x >= 0 for x in v),
        "bool": isinstance(v, bool),
        "float": isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": isinstance(v, str),
        "strs": isinstance(v, list) and all(isinstance(x, str) for x in v),
    }[kind]


# attributes every node of an op must carry, with their kinds (checked on load)
ATTRS: dict[str, dict[str, str]] = {
    "conv2d": {"in_channels": "int", "out_channels": "int", "groups": "int", "bias": "bool",
               "kernel_size": "int2", "stride": "int2", "padding": "int2", "dilation": "int2"},
    "linear": {"in_features": "int", "out_features": "int", "bias": "bool"},
    "batchnorm2d": {"num_features": "int", "eps": "float"},
    "maxpool2d": {"kernel_size": "int2", "stride": "int2", "padding": "int2",
                  "dilation": "int2", "ceil_mode": "bool"},
    "avgpool2d": {"kernel_size": "int2", "stride": "int2", "padding": "int2", "ceil_mode": "bool",
                  "count_include_pad": "bool", "divisor_override": "int?"},
    "adaptive_avgpool2d": {"output_size": "int2"},
    "shortcut_a": {"stride": "int", "pad": "int"},
    "flatten": {"start_dim": "int", "end_dim": "int"},
    "mean": {"dims": "ints", "keepdim": "bool"},
    "cat": {"dim": "int"},
}
QUANT_ATTRS = {"scheme": "str", "bits": "int", "n_codes": "int"}
ACT_ATTRS = {**QUANT_ATTRS, "signed": "bool", "state": "strs"}


def _check_attrs(where: str, attrs: Any, schema: dict[str, str]) -> None:
    if not isinstance(attrs, dict):
        _fail(f"{where}: attributes must be an object")
    for key, kind in schema.items():
        if key not in attrs or not _kind_ok(attrs[key], kind):
            _fail(f"{where}: attribute {key!r} missing or not {kind}")
    e = attrs.get("exponent")
    if "scheme" in schema and e is not None and (not isinstance(e, int) or isinstance(e, bool)):
        _fail(f"{where}: attribute 'exponent' must be an integer or null")


def _expect_array(g: ModelGraph, key: str, shape: list[int] | None, kinds: str) -> None:
    a = g.arrays.get(key)
    if a is None:
        _fail(f"array {key!r} is missing")
    if a.dtype.kind not in kinds:
        _fail(f"array {key!r} has dtype {a.dtype}, expected kind {kinds!r}")
    if shape is not None and list(a.shape) != list(shape):
        _fail(f"array {key!r} has shape {list(a.shape)}, expected {shape}")


def _is_int_list(v: Any, n: int | None = None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v))


def _validate_layer(g: ModelGraph, n: Node) -> None:
    a = n.attrs
    mod = a.get("module")
    if not isinstance(mod, str):
        _fail(f"node {n.name}: attrs.module missing")
    w = a.get("weight")
    if not isinstance(w, dict) or not _is_int_list(w.get("shape")):
        _fail(f"node {n.name}: attrs.weight.shape missing")
    shape = w["shape"]
    if any(s < 0 for s in shape) or len(shape) != (4 if n.op == "conv2d" else 2):
        _fail(f"node {n.name}: bad weight shape {shape}")
    if n.op == "conv2d":
        for k in ("kernel_size", "stride", "padding", "dilation"):
            if not _is_int_list(a.get(k), 2):
                _fail(f"node {n.name}: attrs.{k} must be two integers")
        if not isinstance(a.get("groups"), int) or a["groups"] < 1:
            _fail(f"node {n.name}: attrs.groups must be a positive integer")
        if shape[0] != a.get("out_channels"):
            _fail(f"node {n.name}: weight shape {shape} does not match out_channels")
    elif shape[0] != a.get("out_features"):
        _fail(f"node {n.name}: weight shape {shape} does not match out_features")
    if w.get("quantized") is True:
        _check_attrs(f"node {n.name} weight", w, QUANT_ATTRS)
        nc = w.get("n_codes")
        if not isinstance(nc, int) or not 1 <= nc <= 65536:
            _fail(f"node {n.name}: weight n_codes must be in 1..65536")
        _expect_array(g, f"{mod}.weight.codes", shape, "u")
        _expect_array(g, f"{mod}.weight.negative", shape, "b")
        _expect_array(g, f"{mod}.weight.codebook", [nc], "f")
        codes = g.arrays[f"{mod}.weight.codes"]
        if codes.size and int(codes.max()) >= nc:
            _fail(f"node {n.name}: weight code {int(codes.max())} outside its codebook of {nc}")
    elif w.get("quantized") is False:
        _expect_array(g, f"{mod}.weight", shape, "f")
    else:
        _fail(f"node {n.name}: attrs.weight.quantized must be true or false")
    if a.get("bias"):
        _expect_array(g, f"{mod}.bias", [shape[0]], "f")
    act = a.get("act")
    if act is not None:
        _check_attrs(f"node {n.name} act", act, ACT_ATTRS)
        _expect_array(g, f"{mod}.act.codebook", [act["n_codes"]], "f")
        for k in act.get("state", []):
            _expect_array(g, f"{mod}.act.state.{k}", None, "f")


def _validate(g: ModelGraph) -> None:
    if not _is_int_list(list(g.in_shape)) or any(s < 1 for s in g.in_shape):
        _fail(f"input shape {list(g.in_shape)} is not a list of positive integers")
    if len(g.nodes) < 2 or g.nodes[0].op != "input" or g.nodes[-1].op != "output":
        _fail("the first node must be the input and the last the output")
    seen: set[str] = set()
    for n in g.nodes:
        if not isinstance(n.name, str) or n.name in seen:
            _fail(f"node name {n.name!r} is missing or repeated")
        if n.op not in OPS:
            _fail(f"node {n.name}: unknown op {n.op!r}")
        if not isinstance(n.attrs, dict) or not isinstance(n.inputs, list):
            _fail(f"node {n.name}: attrs must be an object and inputs a list")
        arity = OPS[n.op]
        if (arity is None and not n.inputs) or (arity is not None and len(n.inputs) != arity):
            _fail(f"node {n.name}: op {n.op} takes {arity or '1+'} inputs, got {len(n.inputs)}")
        for i in n.inputs:
            if i not in seen:
                _fail(f"node {n.name}: input {i!r} is not an earlier node")
        if n.op in ("input", "output") and n is not g.nodes[0] and n is not g.nodes[-1]:
            _fail(f"node {n.name}: {n.op} may only be the first/last node")
        if n.op in ATTRS:
            _check_attrs(f"node {n.name}", n.attrs, ATTRS[n.op])
        if n.op in ("conv2d", "linear"):
            _validate_layer(g, n)
        elif n.op == "batchnorm2d":
            mod, c = n.attrs.get("module"), n.attrs.get("num_features")
            if not isinstance(mod, str) or not isinstance(c, int):
                _fail(f"node {n.name}: batchnorm2d needs module and num_features")
            for k in ("weight", "bias", "running_mean", "running_var"):
                _expect_array(g, f"{mod}.{k}", [c], "f")
        seen.add(n.name)


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

