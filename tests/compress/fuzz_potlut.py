"""Structure-aware fuzzing of the .potlut reader, run by test_untrusted.py in a subprocess.

Bodies are mutated at the level of the format (array table, graph attributes, weight
blobs, JSON text) and then given valid CRCs, section table, SHA-256 and header, so the
format checks themselves are what must hold. The process caps its address space at its
size after warm-up plus ``BUDGET`` bytes: a decode that allocates more dies with
MemoryError instead of swapping, and the test fails. Prints ``ok <cases> <accepted>``.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import resource
import struct
import sys
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from potlut.compress import container, file_stats
from potlut.compress.graph import ModelGraph, Node
from potlut.errors import PotlutFormatError

BUDGET = 256 << 20
BIG = [0, 1, 2, 255, 256, 300, 65535, 65536, 1 << 20, 1 << 24, (1 << 24) + 1, 1 << 26,
       1 << 28, 1 << 31, 1 << 62, -1]


def base_graph() -> ModelGraph:
    """Two quantized 4-bit layers with a BN in between and a float bias: every array kind."""
    rng = np.random.default_rng(0)
    nodes = [Node("x", "input", [], {"shape": [2, 4, 4]})]
    arrays: dict[str, np.ndarray] = {}
    for i, (cin, cout) in enumerate([(2, 3), (3, 4)]):
        mod = f"c{i}"
        shape = [cout, cin, 3, 3]
        cb = np.array([0, 0.125, 0.25, 0.5, 1, 2, 4, 8], np.float32)
        arrays[f"{mod}.weight.codes"] = rng.integers(0, 8, shape).astype(np.uint8)
        arrays[f"{mod}.weight.negative"] = (rng.random(shape) < 0.5) & (
            arrays[f"{mod}.weight.codes"] > 0)
        arrays[f"{mod}.weight.codebook"] = cb
        arrays[f"{mod}.bias"] = rng.standard_normal(cout).astype(np.float32)
        nodes.append(Node(mod, "conv2d", [nodes[-1].name], {
            "module": mod, "in_channels": cin, "out_channels": cout, "groups": 1, "bias": True,
            "kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
            "weight": {"quantized": True, "scheme": "iospot", "bits": 4, "n_codes": 8,
                       "shape": shape, "exponent": -3},
            "shape": [cout, 4, 4]}))
        if i == 0:
            for k in ("weight", "bias", "running_mean", "running_var"):
                arrays[f"bn.{k}"] = rng.random(cout).astype(np.float32) + 0.5
            nodes.append(Node("bn", "batchnorm2d", ["c0"], {
                "module": "bn", "num_features": cout, "eps": 1e-5, "shape": [cout, 4, 4]}))
    nodes.append(Node("output", "output", [nodes[-1].name], {}))
    g = ModelGraph((2, 4, 4), nodes, arrays, {"model": "fuzz"})
    g.validate()
    return g


def body_of(arch: dict, blobs: dict[str, bytes], retile: bool, nan: bool = False) -> bytes:
    """Section table + ARCH + DATA with every array CRC and section CRC made valid."""
    entries = arch["arrays"]
    data = b""
    for e in entries:
        name = e.get("name") if isinstance(e, dict) else None
        blob = blobs.get(name, b"") if isinstance(name, str) else b""
        if isinstance(e, dict):
            if retile:
                e["offset"], e["length"] = len(data), len(blob)
            e["crc32"] = zlib.crc32(blob)
        data += blob
    arch_bytes = json.dumps(arch, separators=(",", ":")).encode()
    if nan:  # what json.dumps(allow_nan=True) would write for a NaN attribute
        arch_bytes = arch_bytes.replace(b'"eps":1e-05', b'"eps":NaN')
    secs = [(b"ARCH", arch_bytes), (b"DATA", data)]
    return struct.pack("<I", 2) + b"".join(
        container.SECTION.pack(t, zlib.crc32(b), len(b)) for t, b in secs) + arch_bytes + data


def file_of(body: bytes) -> bytes:
    """A complete file around ``body``: valid sizes, dictionary, SHA-256 and header CRC."""
    dict_size = container.lzma_filters(len(body))[0]["dict_size"]
    payload = lzma.compress(body, format=lzma.FORMAT_RAW, filters=[  # fast preset: same format
        {"id": lzma.FILTER_LZMA2, "preset": 0, "dict_size": dict_size}])
    head = container.HEADER.pack(container.MAGIC, container.VERSION, container.HEADER_SIZE, 0,
                                 len(body), len(payload), dict_size, container.CODEC_LZMA2,
                                 hashlib.sha256(payload).digest(), 0, 0)
    return head[:-4] + struct.pack("<I", zlib.crc32(head[:-4])) + payload


GRAPH = base_graph()
BASE: dict[str, tuple[dict, dict[str, bytes]]] = {}
for _coder in ("shuff", "rans", "packed"):
    _b = container.build_body(GRAPH, _coder)
    _start = 4 + 2 * container.SECTION.size
    _arch = json.loads(_b.body[_start : _start + _b.arch_bytes])
    BASE[_coder] = (_arch, {e.name: _b.data[e.offset: e.offset + e.length] for e in _b.arrays})


def _path(arch: dict, draw) -> tuple[dict, str]:
    """A random (container, key) inside the graph's nodes or the array table."""
    pools = []
    for n in arch["graph"]["nodes"]:
        pools.append(n["attrs"])
        if isinstance(n["attrs"].get("weight"), dict):
            pools.append(n["attrs"]["weight"])
    pools += arch["arrays"]
    target = draw(st.sampled_from(pools + [arch["graph"]]))
    keys = ["in_shape", "meta"] if target is arch["graph"] else sorted(target) or ["x"]
    return target, draw(st.sampled_from(keys))


VALUES = st.one_of(
    st.sampled_from(BIG), st.integers(-3, 70000),
    st.lists(st.sampled_from(BIG + [3, 4, 8, 9]), max_size=5),
    st.sampled_from(["uint8", "uint16", "int8", "float32", "bool", "raw", "shuff", "rans",
                     "packed", "c0.weight.codebook", "bn.bias", "nope", None, True, False]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@st.composite
def crafted(draw) -> bytes:
    coder = draw(st.sampled_from(sorted(BASE)))
    arch = json.loads(json.dumps(BASE[coder][0]))
    blobs = dict(BASE[coder][1])
    kinds = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    for kind in sorted(kinds, reverse=True):  # field changes last: the others need structure
        if kind <= 1:  # change one field of the graph or the table
            target, key = _path(arch, draw)
            target[key] = draw(VALUES)
        elif kind == 2:  # replace a weight blob (side info kept or random)
            name = draw(st.sampled_from(sorted(blobs)))
            blob = bytearray(blobs[name])
            tail = draw(st.binary(max_size=64))
            cut = draw(st.integers(0, len(blob)))
            if draw(st.booleans()):
                blob = blob[:cut] + tail
            elif blob:
                pos = draw(st.integers(0, len(blob) - 1))
                blob[pos] = draw(st.integers(0, 255))
            if draw(st.booleans()) and len(blob) >= 24:  # a huge declared bit / byte count
                struct.pack_into("<Q" if coder == "shuff" else "<I", blob, 8 if coder ==
                                 "shuff" else 17, draw(st.sampled_from(BIG[1:-1])) & 0xFFFFFFFF)
            blobs[name] = bytes(blob)
        elif kind == 3:  # an extra array the graph does not use, or one dropped
            if draw(st.booleans()):
                arch["arrays"].append({"name": "extra", "encoding": "raw", "dtype": "float32",
                                       "shape": draw(st.lists(st.sampled_from(BIG), max_size=3)),
                                       "offset": 0, "length": 4, "crc32": 0})
                blobs["extra"] = b"\0\0\0\0"
            elif arch["arrays"]:
                arch["arrays"].pop(draw(st.integers(0, len(arch["arrays"]) - 1)))
        elif kind == 4:  # a huge shape on a coded layer, graph kept consistent or not
            shape = [draw(st.sampled_from(BIG[:12])), 1, 1, 1]
            for e in arch["arrays"]:
                if e["name"] == "c1.weight":
                    e["shape"] = shape
            if draw(st.booleans()):
                node = arch["graph"]["nodes"][-2]["attrs"]
                node["weight"]["shape"] = shape
                node["out_channels"] = shape[0]
                node["shape"] = [shape[0], 4, 4]
        else:  # an all-zero / one-code stream declaring many weights
            n = draw(st.sampled_from([1 << 16, 1 << 20, 1 << 23]))
            if coder == "shuff":
                blob = bytes([1] + [0] * 7) + struct.pack("<Q", n) + bytes(n // 8)
            elif coder == "rans":
                blob = (bytes([12]) + struct.pack("<8H", 0, 4096, 0, 0, 0, 0, 0, 0)
                        + struct.pack("<I", 4) + struct.pack("<I", 1 << 23) + bytes(n // 8))
            else:
                blob = bytes(n // 2)
            blobs["c1.weight"] = blob
            for e in arch["arrays"]:
                if e["name"] == "c1.weight":
                    e["shape"] = [n, 1, 1, 1]
    nan = draw(st.integers(0, 9)) == 0
    return file_of(body_of(arch, blobs, retile=draw(st.integers(0, 4)) > 0, nan=nan))


def largest_layers() -> list[bytes]:
    """Files of ~1 KB the reader accepts, each at a limit: a layer of 2^24 - 54 weights
    in a 4-byte rANS stream (one code of frequency M), and the largest all-zero S-Huff /
    packed streams the body-to-payload ratio lets through."""
    out = []
    for coder, n in [("rans", (1 << 24) - 54), ("shuff", (1 << 23) - (1 << 16)),
                     ("packed", (1 << 21) - (1 << 14))]:
        arch, blobs = json.loads(json.dumps(BASE[coder][0])), dict(BASE[coder][1])
        node = arch["graph"]["nodes"][-2]["attrs"]
        node["weight"]["shape"], node["out_channels"], node["shape"] = [n, 1, 1, 1], n, [n, 4, 4]
        node["in_channels"], node["bias"] = 3, False
        arch["arrays"] = [e for e in arch["arrays"] if e["name"] != "c1.bias"]
        next(e for e in arch["arrays"] if e["name"] == "c1.weight")["shape"] = [n, 1, 1, 1]
        if coder == "rans":
            blob = bytes([12]) + struct.pack("<8H", 4096, *[0] * 7) + struct.pack("<II", 4, 1 << 23)
        elif coder == "shuff":
            blob = bytes([1] + [0] * 7) + struct.pack("<Q", n) + bytes((n + 7) // 8)
        else:
            blob = bytes((4 * n + 7) // 8)
        blobs["c1.weight"] = blob
        out.append(file_of(body_of(arch, blobs, True)))
    return out


OUTCOME = {"cases": 0, "accepted": 0}


def check(data: bytes) -> None:
    assert len(data) <= 1 << 20
    OUTCOME["cases"] += 1
    try:
        graph, info = container.decode(data)
    except PotlutFormatError:
        return
    graph.validate()
    file_stats(graph, info)  # what `potlut inspect` computes on an accepted file
    OUTCOME["accepted"] += 1


def main() -> None:
    for arch, blobs in BASE.values():  # warm-up: numba compiled, every code path imported
        graph, info = container.decode(file_of(body_of(json.loads(json.dumps(arch)), blobs,
                                                       True)))
        file_stats(graph, info)
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + BUDGET, vm + BUDGET))
    for data in largest_layers():
        graph, info = container.decode(data)
        file_stats(graph, info)
        print("largest", len(data), sum(a.size for a in graph.arrays.values()))
    run = settings(max_examples=int(sys.argv[1]), deadline=None, database=None,
                   derandomize=True, suppress_health_check=list(HealthCheck))(
        given(crafted())(check))
    run()
    print("ok", OUTCOME["cases"], OUTCOME["accepted"])


if __name__ == "__main__":
    main()
