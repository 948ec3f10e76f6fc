"""The schema of a model graph: the op set, each op's attributes and arrays, and the check
that a graph (e.g. one read from a file) follows it. docs/format.md lists the same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from potlut.errors import PotlutFormatError

if TYPE_CHECKING:  # pragma: no cover
    from potlut.compress.graph import ModelGraph, Node

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
    "batchnorm2d": {"num_features": "int"},
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


@dataclass(frozen=True)
class ArraySpec:
    """What the graph requires of one array: its shape (None: any) and dtype kinds."""

    shape: tuple[int, ...] | None
    kinds: str


Specs = dict[str, ArraySpec]


def _expect_array(specs: Specs, key: str, shape: list[int] | None, kinds: str) -> None:
    if key in specs and specs[key] != ArraySpec(None if shape is None else tuple(shape), kinds):
        _fail(f"array {key!r} is required twice with different shapes")
    specs[key] = ArraySpec(None if shape is None else tuple(shape), kinds)


def check_array(key: str, a: Any, spec: ArraySpec) -> None:
    """Check one array against what the graph requires of it."""
    if a is None:
        _fail(f"array {key!r} is missing")
    if a.dtype.kind not in spec.kinds:
        _fail(f"array {key!r} has dtype {a.dtype}, expected kind {spec.kinds!r}")
    if spec.shape is not None and tuple(a.shape) != spec.shape:
        _fail(f"array {key!r} has shape {list(a.shape)}, expected {list(spec.shape)}")


def _is_int_list(v: Any, n: int | None = None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v))


def _validate_layer(specs: Specs, n: Node) -> None:
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
        if shape[0] != a.get("out_channels") or shape[1] * a["groups"] != a.get("in_channels"):
            _fail(f"node {n.name}: weight shape {shape} does not match out_channels / "
                  "in_channels / groups")
    elif shape[0] != a.get("out_features") or shape[1] != a.get("in_features"):
        _fail(f"node {n.name}: weight shape {shape} does not match out_features / in_features")
    if w.get("quantized") is True:
        _check_attrs(f"node {n.name} weight", w, QUANT_ATTRS)
        nc = w.get("n_codes")
        if not isinstance(nc, int) or not 1 <= nc <= 65536:
            _fail(f"node {n.name}: weight n_codes must be in 1..65536")
        _expect_array(specs, f"{mod}.weight.codes", shape, "u")
        _expect_array(specs, f"{mod}.weight.negative", shape, "b")
        _expect_array(specs, f"{mod}.weight.codebook", [nc], "f")
    elif w.get("quantized") is False:
        _expect_array(specs, f"{mod}.weight", shape, "f")
    else:
        _fail(f"node {n.name}: attrs.weight.quantized must be true or false")
    if a.get("bias"):
        _expect_array(specs, f"{mod}.bias", [shape[0]], "f")
    act = a.get("act")
    if act is not None:
        _check_attrs(f"node {n.name} act", act, ACT_ATTRS)
        _expect_array(specs, f"{mod}.act.codebook", [act["n_codes"]], "f")
        for k in act.get("state", []):
            _expect_array(specs, f"{mod}.act.state.{k}", None, "f")


def _check_shape_attr(n: Node, in_shape: list[int]) -> None:
    """``attrs.shape`` (a node's output shape) agrees with the input and layer widths."""
    shape = n.attrs.get("shape")
    if n.op == "input":
        if shape != in_shape:
            _fail(f"node {n.name}: attrs.shape {shape} differs from in_shape {in_shape}")
        return
    if shape is None:
        return
    if not _is_int_list(shape) or any(s < 1 for s in shape):
        _fail(f"node {n.name}: attrs.shape must be a list of positive integers or null")
    width = {"conv2d": "out_channels", "linear": "out_features",
             "batchnorm2d": "num_features"}.get(n.op)
    if width is not None and (not shape or shape[0 if n.op != "linear" else -1]
                              != n.attrs.get(width)):
        _fail(f"node {n.name}: attrs.shape {shape} does not match {width}")


def required_arrays(g: ModelGraph) -> Specs:
    """Check the graph's structure (not its arrays); return the arrays it requires.

    A file reader compares the stored array table with this before decoding anything,
    so a declared shape the graph does not ask for never allocates memory.
    """
    specs: Specs = {}
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
        _check_shape_attr(n, list(g.in_shape))
        if n.op in ("conv2d", "linear"):
            _validate_layer(specs, n)
        elif n.op == "batchnorm2d":
            mod, c = n.attrs.get("module"), n.attrs.get("num_features")
            if not isinstance(mod, str) or not isinstance(c, int):
                _fail(f"node {n.name}: batchnorm2d needs module and num_features")
            for k in ("scale", "shift"):  # folded: y = x * scale + shift
                _expect_array(specs, f"{mod}.{k}", [c], "f")
        seen.add(n.name)
    return specs


def validate(g: ModelGraph) -> None:
    """Check that ``g`` is well formed; :class:`PotlutFormatError` names the first problem.

    Beyond the structure: every required array exists with its shape and dtype kind, no
    array is unreferenced, and no weight code lies outside its codebook.
    """
    specs = required_arrays(g)
    for key, spec in specs.items():
        check_array(key, g.arrays.get(key), spec)
    extra = sorted(set(g.arrays) - set(specs))
    if extra:
        _fail(f"array {extra[0]!r} is not used by any node")
    for key, codes in g.arrays.items():
        if key.endswith(".weight.codes") and specs[key].kinds == "u" and codes.size:
            nc = len(g.arrays[key[: -len("codes")] + "codebook"])
            if int(codes.max()) >= nc:
                _fail(f"array {key!r}: weight code {int(codes.max())} outside its codebook "
                      f"of {nc}")
