"""The architecture JSON (ARCH section) of format v4: the graph with what follows from it
left out.

A v4 writer omits a node's name when it is the default name, its inputs when they are the
previous node, and attributes that other attributes give (layer widths from the weight
shape, code counts from the bit-width, ``quantized: true``); other inputs are written as
"k nodes back". The reader puts them back before any check, so the checks see the full
graph of docs/format.md §1 (the rules are in §2). On the CIFAR ResNet20 of issue 17 the
JSON goes from 14,204 to 9,230 bytes and the file's overhead from 2,718 to 2,308 bytes.
"""

from __future__ import annotations

from typing import Any

from potlut.errors import PotlutFormatError

MAX_BITS = 17  # a default code count 2^(bits - 1) or 2^bits is at most 65536


def default_names(nodes: list[tuple[Any, Any]]) -> list[str | None]:
    """The default name of each node given as ``(op, attrs)``, in order.

    The base is the layer's module path with ``.`` replaced by ``_`` (nodes with a string
    ``attrs.module``), else the op; the j-th node with a base (counting from 0, every node
    counted) is ``base`` for j = 0 and ``base_j`` after. None where the op is not a string.
    """
    seen: dict[str, int] = {}
    out: list[str | None] = []
    for op, attrs in nodes:
        mod = attrs.get("module") if isinstance(attrs, dict) else None
        base = mod.replace(".", "_") if isinstance(mod, str) else op
        if not isinstance(base, str):
            out.append(None)
            continue
        j = seen.get(base, 0)
        seen[base] = j + 1
        out.append(base if j == 0 else f"{base}_{j}")
    return out


def _int(v: Any) -> bool:
    return type(v) is int


def _ints(v: Any, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(_int(x) for x in v)


def _defaults(op: Any, attrs: dict[str, Any]) -> list[tuple[dict[str, Any], str, Any]]:
    """The attributes that follow from others, as ``(dict, key, value)`` in the order a
    reader fills them in (``quantized`` first: a weight's code count depends on it)."""
    out: list[tuple[dict[str, Any], str, Any]] = []
    w, act, shape = attrs.get("weight"), attrs.get("act"), attrs.get("shape")
    if op in ("conv2d", "linear") and isinstance(w, dict):
        out.append((w, "quantized", True))
        q = w.get("quantized", True) is True
        if q and _int(w.get("bits")) and 1 <= w["bits"] <= MAX_BITS:
            out.append((w, "n_codes", 1 << (w["bits"] - 1)))
        ws = w.get("shape")
        if op == "conv2d" and _ints(ws, 4):
            out.append((attrs, "out_channels", ws[0]))
            if _int(attrs.get("groups")):
                out.append((attrs, "in_channels", ws[1] * attrs["groups"]))
        if op == "linear" and _ints(ws, 2):
            out += [(attrs, "out_features", ws[0]), (attrs, "in_features", ws[1])]
    if op in ("conv2d", "linear") and isinstance(act, dict):
        bits, signed = act.get("bits"), act.get("signed")
        if _int(bits) and 1 <= bits <= MAX_BITS and isinstance(signed, bool):
            out.append((act, "n_codes", 1 << (bits - signed)))
    if op == "batchnorm2d" and isinstance(shape, list) and shape and _int(shape[0]):
        out.append((attrs, "num_features", shape[0]))
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (``True`` is not ``1``)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def compact(graph: dict[str, Any]) -> dict[str, Any]:
    """The v4 ARCH form of a full architecture (``ModelGraph.architecture()``); expanding
    it with :func:`expand` gives ``graph`` back exactly."""
    nodes = graph["nodes"]
    names = default_names([(n["op"], n["attrs"]) for n in nodes])
    index = {n["name"]: i for i, n in enumerate(nodes)}
    out = []
    for i, n in enumerate(nodes):
        attrs = {k: (dict(v) if k in ("weight", "act") and isinstance(v, dict) else v)
                 for k, v in n["attrs"].items()}
        for d, key, value in _defaults(n["op"], attrs):  # (on the copies)
            if key in d and _same(d[key], value):
                del d[key]
        c: dict[str, Any] = {"op": n["op"]}
        if n["name"] != names[i]:
            c["name"] = n["name"]
        if n["inputs"] != ([nodes[i - 1]["name"]] if i else []):
            c["inputs"] = [i - index[x] for x in n["inputs"]]
        if attrs:
            c["attrs"] = attrs
        out.append(c)
    small = {"in_shape": graph["in_shape"], "nodes": out}
    if graph.get("meta"):
        small["meta"] = graph["meta"]
    return small


def expand(graph: Any) -> Any:
    """Put back what a v4 ARCH graph leaves out (in place); structure it does not
    recognize is left for the graph checks to reject."""
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        return graph
    graph.setdefault("meta", {})
    nodes = graph["nodes"]
    for n in nodes:
        if isinstance(n, dict):
            attrs = n.setdefault("attrs", {})
            if isinstance(attrs, dict):
                for d, key, value in _defaults(n.get("op"), attrs):
                    d.setdefault(key, value)
    names = default_names([(n.get("op"), n.get("attrs")) if isinstance(n, dict) else (None, None)
                           for n in nodes])
    for i, n in enumerate(nodes):
        if not isinstance(n, dict):
            continue
        if "name" not in n and names[i] is not None:
            n["name"] = names[i]
        if "inputs" not in n:
            n["inputs"] = [_name(nodes, i, 1)] if i else []
        elif isinstance(n["inputs"], list):
            n["inputs"] = [_name(nodes, i, k) if _int(k) else k for k in n["inputs"]]
    return graph


def _name(nodes: list[Any], i: int, k: int) -> Any:
    """The name of the node ``k`` places before node ``i``."""
    if not 1 <= k <= i:
        raise PotlutFormatError(f"architecture: graph.nodes[{i}].inputs refers {k} nodes back")
    prev = nodes[i - k]
    return prev.get("name") if isinstance(prev, dict) else None
