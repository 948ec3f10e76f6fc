"""Structure-aware fuzzing of the .potlut reader, run by test_untrusted.py in a subprocess.

Bodies are mutated at the level of the format (binary array table, graph attributes,
weight blobs, JSON text) and then given a valid section table, SHA-256 and header, so the
format checks themselves are what must hold; multi-bit files (docs/format.md §4) are
mutated the same way in their delta JSON and data around a valid single-model base. The
process caps its address space at its size after warm-up plus ``BUDGET`` bytes: a decode
that allocates more dies with MemoryError instead of swapping, and the test fails. Prints
``largest <bytes> <elements> <cpu s>`` per limit file, then ``ok <cases> <accepted>
<multi-bit cases> <multi-bit accepted> <slowest case's cpu s>``.
"""

from __future__ import annotations

import copy as deep
import hashlib
import json
import lzma
import resource
import struct
import sys
import time
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from potlut.compress import archjson, container, file_stats, multibit, shuff
from potlut.compress.graph import ModelGraph, Node
from potlut.compress.sharing import SharedWeights
from potlut.errors import PotlutFormatError

BUDGET = 256 << 20
BIG = [0, 1, 2, 255, 256, 300, 65535, 65536, 1 << 20, 1 << 24, (1 << 24) + 1, 1 << 26,
       1 << 28, 1 << 31, 1 << 62, -1]


def base_graph() -> ModelGraph:
    """Two quantized 4-bit layers with a BN in between and a float bias: every array kind
    (a stored and a derived weight codebook, a derived activation codebook, a quantizer
    state whose shape only the array table gives, a raw and a ``scaled`` BN array)."""
    rng = np.random.default_rng(0)
    nodes = [Node("x", "input", [], {"shape": [2, 4, 4]})]
    arrays: dict[str, np.ndarray] = {}
    cb = np.array([0, 0.125, 0.25, 0.5, 1, 2, 4, 8], np.float32)  # 2^(3 - (7 - c))
    for i, (cin, cout) in enumerate([(2, 3), (3, 4)]):
        mod = f"c{i}"
        shape = [cout, cin, 3, 3]
        arrays[f"{mod}.weight.codes"] = rng.integers(0, 8, shape).astype(np.uint8)
        arrays[f"{mod}.weight.negative"] = (rng.random(shape) < 0.5) & (
            arrays[f"{mod}.weight.codes"] > 0)
        arrays[f"{mod}.weight.codebook"] = cb
        arrays[f"{mod}.bias"] = rng.standard_normal(cout).astype(np.float32)
        act = None
        if i == 1:
            arrays[f"{mod}.act.codebook"] = cb / 8
            arrays[f"{mod}.act.state.a"] = np.array(1.0, np.float32)
            act = {"scheme": "iospot", "bits": 4, "signed": True, "exponent": 0, "n_codes": 8,
                   "state": ["a"]}
        nodes.append(Node(mod, "conv2d", [nodes[-1].name], {
            "module": mod, "in_channels": cin, "out_channels": cout, "groups": 1, "bias": True,
            "kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
            "weight": {"quantized": True, "scheme": "iospot", "bits": 4, "n_codes": 8,
                       "shape": shape, "exponent": 3 if i else -3},  # c0: not the formula
            "act": act, "shape": [cout, 4, 4]}))
        if i == 0:
            for k in ("scale", "shift"):
                arrays[f"bn.{k}"] = rng.random(cout).astype(np.float32) + 0.5
            arrays["bn.scale"] = np.round(arrays["bn.scale"] * 64) / 64  # stored ``scaled``
            nodes.append(Node("bn", "batchnorm2d", ["c0"], {
                "module": "bn", "num_features": cout, "shape": [cout, 4, 4]}))
    nodes.append(Node("output", "output", [nodes[-1].name], {}))
    g = ModelGraph((2, 4, 4), nodes, arrays, {"model": "fuzz"})
    g.validate()
    return g


def table_of(entries: list[dict]) -> bytes:
    """The binary array table (ARRS) of ``entries`` (fields wrapped to their widths)."""
    out = struct.pack("<I", len(entries))
    for e in entries:
        out += container.ENTRY.pack(e["encoding"] & 0xFF, e["dtype"] & 0xFF,
                                    e["length"] & 0xFFFFFFFF)
        if e.get("shape") is not None:
            dims = [d & 0xFFFFFFFF for d in e["shape"]]
            out += struct.pack(f"<B{len(dims)}I", len(dims) & 0xFF, *dims)
    return out


def body_of(arch: dict, entries: list[dict], blobs: dict[str, bytes], retile: bool,
            nan: bool = False) -> bytes:
    """Section table + ARCH + ARRS + DATA (raw / scaled / derived arrays, then weight streams);
    ``retile`` makes every entry's length that of its blob."""
    coded = {container.ENCODING_IDS[c] for c in container.CODERS}
    order = sorted(entries, key=lambda e: e["encoding"] in coded)
    data = b""
    for e in order:
        blob = blobs.get(e["name"], b"")
        if retile:
            e["length"] = len(blob)
        data += blob
    arch_bytes = json.dumps(arch, separators=(",", ":")).encode()
    if nan:  # what json.dumps(allow_nan=True) would write for a NaN value
        arch_bytes = arch_bytes.replace(b'"model":"fuzz"', b'"model":NaN')
    return container._sections([(b"ARCH", arch_bytes), (b"ARRS", table_of(entries)),
                                (b"DATA", data)])


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
BASE: dict[str, tuple[dict, list[dict], dict[str, bytes]]] = {}
for _coder in ("shuff", "rans", "packed"):
    _b = container.build_body(GRAPH, _coder)
    _slots = container.slots(GRAPH, container.required_arrays(GRAPH))
    _entries = [{"name": e.name, "encoding": container.ENCODING_IDS[e.encoding],
                 "dtype": container.DTYPE_IDS[e.dtype], "length": e.length,
                 "shape": e.shape if s.spec.shape is None else None}
                for e, s in zip(_b.arrays, _slots, strict=True)]
    BASE[_coder] = ({"format": "potlut", "graph": GRAPH.architecture()}, _entries,
                    {e.name: _b.data[e.offset: e.offset + e.length] for e in _b.arrays})


def copy(coder: str) -> tuple[dict, list[dict], dict[str, bytes]]:
    """A deep copy of the base file's parts for ``coder``: (arch, table entries, blobs)."""
    arch, entries, blobs = BASE[coder]
    return json.loads(json.dumps(arch)), json.loads(json.dumps(entries)), dict(blobs)


def _path(arch: dict, entries: list[dict], draw) -> tuple[dict, str]:
    """A random (container, key) inside the graph's nodes or the array table."""
    pools = []
    for n in arch["graph"]["nodes"]:
        pools.append(n)
        pools.append(n.setdefault("attrs", {}))  # (a compact node without attrs: the same)
        for k in ("weight", "act"):
            if isinstance(n["attrs"].get(k), dict):
                pools.append(n["attrs"][k])
    pools += entries
    target = draw(st.sampled_from(pools + [arch["graph"]]))
    if target is arch["graph"]:
        keys = ["in_shape", "meta"]
    elif target in entries:
        keys = ["encoding", "dtype", "length", "shape"]
    elif target in arch["graph"]["nodes"]:
        keys = ["name", "op", "inputs"]
    else:
        keys = sorted(target) or ["x"]
    return target, draw(st.sampled_from(keys))


VALUES = st.one_of(
    st.sampled_from(BIG), st.integers(-3, 70000),
    st.lists(st.sampled_from(BIG + [3, 4, 8, 9]), max_size=5),
    st.sampled_from(["uint8", "uint16", "int8", "float32", "bool", "iospot", "fixedpoint",
                     "lqnet", "nope", None, True, False]),
    st.floats(allow_nan=True, allow_infinity=True),
)
TABLE_VALUES = {  # what the binary table's fields can hold
    "encoding": st.integers(0, 255), "dtype": st.integers(0, 255),
    "length": st.sampled_from(BIG[:-1] + [3, 4, 12, 36]),
    "shape": st.one_of(st.none(), st.lists(st.sampled_from(BIG[:-1] + [1, 3]), max_size=9)),
}


def _layer(arch: dict) -> dict:
    """The last conv's attrs, with a ``weight`` object (either ARCH form)."""
    node = arch["graph"]["nodes"][-2].setdefault("attrs", {})
    if not isinstance(node.get("weight"), dict):
        node["weight"] = {}
    return node


@st.composite
def crafted(draw) -> bytes:
    coder = draw(st.sampled_from(sorted(BASE)))
    arch, entries, blobs = copy(coder)
    if draw(st.booleans()):  # the v4 compact ARCH form the writer uses (defaults left out)
        arch["graph"] = archjson.compact(arch["graph"])
    kinds = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    retile = draw(st.integers(0, 4)) > 0
    for kind in sorted(kinds, reverse=True):  # field changes last: the others need structure
        if kind <= 1:  # change one field of the graph or the table
            target, key = _path(arch, entries, draw)
            if target in entries:
                retile = retile and key != "length"
                target[key] = draw(TABLE_VALUES[key])
            else:
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
            if draw(st.booleans()) and len(blob) >= 24 and coder == "rans":  # huge nstream
                struct.pack_into("<I", blob, 17, draw(st.sampled_from(BIG[1:-1])) & 0xFFFFFFFF)
            blobs[name] = bytes(blob)
        elif kind == 3:  # an extra table entry, one dropped, or raw <-> derived swapped
            choice = draw(st.integers(0, 2))
            if choice == 0:
                entries.append({"name": "extra", "encoding": 0, "dtype": 9, "length": 4,
                                "shape": draw(st.one_of(st.none(), st.lists(
                                    st.sampled_from(BIG[:-1]), max_size=3)))})
                blobs["extra"] = b"\0\0\0\0"
            elif choice == 1 or not entries:
                if entries:
                    entries.pop(draw(st.integers(0, len(entries) - 1)))
            else:
                e = draw(st.sampled_from(entries))
                e["encoding"] = 1 - e["encoding"] if e["encoding"] < 2 else 0
                blobs[e["name"]] = b"" if e["encoding"] == 1 else np.zeros(8, np.float32).tobytes()
        elif kind == 4:  # a huge coded layer, declared by the graph (shapes live there)
            n = draw(st.sampled_from(BIG[:12]))
            node = _layer(arch)
            node["weight"]["shape"], node["out_channels"] = [n, 3, 1, 1], n
            node["kernel_size"], node["padding"] = [1, 1], [0, 0]
            if draw(st.booleans()):
                node["shape"] = [n, 4, 4]
        else:  # an all-zero / one-code stream declaring many weights
            n = draw(st.sampled_from([1 << 16, 1 << 20, 1 << 23]))
            blobs["c1.weight"] = zero_stream(coder, n)
            node = _layer(arch)
            node["weight"]["shape"], node["out_channels"] = [n, 1, 1, 1], n
            node["in_channels"], node["kernel_size"], node["padding"] = 1, [1, 1], [0, 0]
            node["shape"], node["bias"] = [n, 4, 4], False
    nan = draw(st.integers(0, 9)) == 0
    return file_of(body_of(arch, entries, blobs, retile=retile, nan=nan))


def zero_stream(coder: str, n: int) -> bytes:
    """A stream of ``n`` weights of code 0 (8 codes): one length-1 Huffman code, one
    rANS code of frequency M, or all-zero packed codes."""
    if coder == "shuff":
        return shuff.encode_weights(SharedWeights(np.zeros(n, np.uint8), np.zeros(n, bool),
                                                  np.zeros(8, np.float32)))
    if coder == "rans":
        return (bytes([12]) + struct.pack("<8H", 4096, *[0] * 7) + struct.pack("<II", 4, 1 << 23)
                + bytes(n // 8))
    return bytes(n // 2)


def largest_layers() -> list[bytes]:
    """Files of ~1 KB the reader accepts, each at a limit: a layer of 2^24 - 54 weights
    in a 4-byte rANS stream (one code of frequency M), and the largest all-zero S-Huff /
    packed streams the body-to-payload ratio lets through."""
    out = []
    for coder, n in [("rans", (1 << 24) - 54), ("shuff", (1 << 23) - (1 << 16)),
                     ("packed", (1 << 21) - (1 << 14))]:
        arch, entries, blobs = copy(coder)
        node = arch["graph"]["nodes"][-2]["attrs"]
        node["weight"]["shape"], node["out_channels"], node["shape"] = [n, 1, 1, 1], n, [n, 4, 4]
        node["in_channels"], node["bias"] = 1, False
        entries = [e for e in entries if e["name"] != "c1.bias"]
        blobs["c1.weight"] = zero_stream(coder, n)[: 25 if coder == "rans" else None]
        out.append(file_of(body_of(arch, entries, blobs, True)))
    return out


def narrow(g: ModelGraph) -> ModelGraph:
    """``g`` with every code halved (a 2-bit-like width of the same architecture)."""
    arrays = {k: v.copy() for k, v in g.arrays.items()}
    for n in g.quantized_layers():
        w = f"{n.attrs['module']}.weight"
        arrays[f"{w}.codes"] >>= 1
        arrays[f"{w}.negative"] &= arrays[f"{w}.codes"] > 0
    return ModelGraph(g.in_shape, [Node(n.name, n.op, list(n.inputs), deep.deepcopy(n.attrs))
                                   for n in g.nodes], arrays, dict(g.meta))


def multi_parts(graphs: dict[int, ModelGraph]) -> tuple[bytes, dict, bytes]:
    """(base file, delta JSON document, delta data) of the multi-bit file of ``graphs``."""
    base_file, doc, data = multibit._parse(multibit.encode_multi(graphs)[0])
    return base_file, doc, data


def multi_file_of(base_file: bytes, doc: dict, data: bytes, nan: bool = False) -> bytes:
    """A multi-bit file around the parts: valid sizes, dictionary, SHA-256 and header CRC."""
    js = json.dumps(doc, separators=(",", ":")).encode()
    if nan:
        js = js.replace(b'"model":"fuzz"', b'"model":NaN', 1)
    body = struct.pack("<I", len(js)) + js + data
    dict_size = container.lzma_filters(len(body))[0]["dict_size"]
    payload = lzma.compress(body, format=lzma.FORMAT_RAW, filters=[
        {"id": lzma.FILTER_LZMA2, "preset": 0, "dict_size": dict_size}])
    head = multibit.HEADER.pack(multibit.MAGIC, multibit.VERSION, multibit.HEADER_SIZE,
                                len(base_file), len(body), len(payload), dict_size,
                                hashlib.sha256(base_file + payload).digest(), 0)
    return head[:-4] + struct.pack("<I", zlib.crc32(head[:-4])) + base_file + payload


def nested_everywhere(base_file: bytes, widths: list[int]) -> bytes:
    """A multi-bit file whose every narrow width repeats the base's codes as nested layers
    of zero data bytes: the most weights a few hundred bytes of deltas can declare."""
    base, _ = container.decode(base_file)
    entries = [{"name": f"{n.attrs['module']}.weight", "encoding": "nested", "dtype": "uint8",
                "shape": list(base.arrays[f"{n.attrs['module']}.weight.codes"].shape),
                "candidates": [[c] for c in range(8)], "offset": 0, "length": 0,
                "crc32": 0} for n in base.quantized_layers()]
    deltas = {str(w): {"meta": {"model": "fuzz"}, "nodes": {}, "drop": [], "arrays": entries}
              for w in widths}
    doc = {"format": "potlut-multibit", "base": 4, "widths": [*widths, 4], "deltas": deltas}
    return multi_file_of(base_file, doc, b"")


MULTI = multi_parts({2: narrow(GRAPH), 4: GRAPH})
ENTRY_VALUES = {
    "name": st.sampled_from(["c0.weight", "c1.weight", "c0.bias", "bn.scale", "nope",
                             "c1.weight.codebook", "c1.weight.codes"]),
    "encoding": st.sampled_from(["raw", "shuff", "rans", "packed", "nested", "zip", 3]),
    "dtype": st.sampled_from(["uint8", "uint16", "float32", "bool", "int64", None]),
    "shape": st.lists(st.sampled_from(BIG[:-1] + [1, 3, 4]), max_size=9),
    "offset": st.sampled_from(BIG + [24, 66]), "length": st.sampled_from(BIG + [24, 42]),
    "crc32": st.sampled_from(BIG),
    "candidates": st.one_of(
        st.lists(st.lists(st.integers(0, 9), max_size=4), max_size=10),
        st.sampled_from([[[c] for c in range(8)], [[0, 1]] * 8, [[1, 0]] * 8,
                         [list(range(8))] * 70000, [[0]] * 70000])),
}


@st.composite
def crafted_multi(draw) -> bytes:
    big = draw(st.integers(0, 3)) == 0
    if big:  # the 2^24-weight rANS base: what a lax width check would multiply
        return nested_everywhere(LARGEST[0], draw(st.sampled_from([[2], [2, 3], [1, 2, 3]])))
    base_file, doc, data = deep.deepcopy(MULTI)
    entries = doc["deltas"]["2"]["arrays"]
    blobs = [data[e["offset"] : e["offset"] + e["length"]] for e in entries]
    for kind in draw(st.lists(st.integers(0, 4), min_size=1, max_size=3)):
        i = draw(st.integers(0, len(entries) - 1)) if entries else 0
        if kind <= 1 and entries:  # change one field of an entry
            key = draw(st.sampled_from(sorted(ENTRY_VALUES)))
            entries[i][key] = draw(ENTRY_VALUES[key])
        elif kind == 2 and entries:  # a second entry for the same array
            entries.append(dict(entries[i]))
            blobs.append(blobs[i])
        elif kind == 3 and entries:  # a weight stream declaring many weights
            n = draw(st.sampled_from([1 << 16, 1 << 20, 1 << 23]))
            coder = draw(st.sampled_from(["shuff", "rans", "packed"]))
            entries[i].update(encoding=coder, shape=[n, 1, 1, 1])
            blobs[i] = zero_stream(coder, n)
        else:  # the JSON outside the entries
            target = draw(st.sampled_from(["widths", "base", "nodes", "drop", "meta"]))
            value = draw(VALUES)
            if target in ("widths", "base"):
                doc[target] = value
            else:
                doc["deltas"]["2"][target] = value
    if draw(st.integers(0, 4)) > 0:  # keep offsets and lengths consistent with the blobs
        offset = 0
        for e, b in zip(entries, blobs, strict=True):
            if isinstance(e, dict):
                e.update(offset=offset, length=len(b), crc32=zlib.crc32(b))
            offset += len(b)
    return multi_file_of(base_file, doc, b"".join(blobs), nan=draw(st.integers(0, 9)) == 0)


LARGEST = largest_layers()
OUTCOME = {"cases": 0, "accepted": 0, "multi": 0, "multi_accepted": 0, "slowest": 0.0}


def open_file(data: bytes) -> None:
    """What loading and ``potlut inspect`` do with a file, up to its acceptance."""
    if multibit.is_multibit(data):
        graphs, _ = multibit.decode_multi(data)
        for graph in graphs.values():
            graph.validate()
        return
    graph, info = container.decode(data)
    graph.validate()
    file_stats(graph, info)


def check(data: bytes) -> None:
    assert len(data) <= 1 << 20
    OUTCOME["cases"] += 1
    OUTCOME["multi"] += multibit.is_multibit(data)
    start = time.process_time()
    try:
        open_file(data)
        OUTCOME["accepted"] += 1
        OUTCOME["multi_accepted"] += multibit.is_multibit(data)
    except PotlutFormatError:
        pass
    OUTCOME["slowest"] = max(OUTCOME["slowest"], time.process_time() - start)


def limit_files() -> list[bytes]:
    """The largest single files, and multi-bit files with the most weights their deltas can
    declare: base + one width (at the limit, accepted) and base + two widths (refused)."""
    return LARGEST + [nested_everywhere(LARGEST[0], [2]), nested_everywhere(LARGEST[0], [2, 3])]


def main() -> None:
    for coder in BASE:  # warm-up: numba compiled, every code path imported
        graph, info = container.decode(file_of(body_of(*copy(coder), True)))
        file_stats(graph, info)
    multibit.decode_multi(multi_file_of(*MULTI))
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + BUDGET, vm + BUDGET))
    for data in limit_files():
        start = time.process_time()
        try:
            open_file(data)
        except PotlutFormatError:
            print("largest", len(data), 0, round(time.process_time() - start, 3))
            continue
        seconds = time.process_time() - start
        graphs = (multibit.decode_multi(data)[0].values() if multibit.is_multibit(data)
                  else [container.decode(data)[0]])
        elements = sum(a.size for g in graphs for a in g.arrays.values())
        print("largest", len(data), elements, round(seconds, 3))
    run = settings(max_examples=int(sys.argv[1]), deadline=None, database=None,
                   derandomize=True, suppress_health_check=list(HealthCheck))(
        given(st.one_of(crafted(), crafted_multi()))(check))
    run()
    print("ok", OUTCOME["cases"], OUTCOME["accepted"], OUTCOME["multi"],
          OUTCOME["multi_accepted"], round(OUTCOME["slowest"], 3))


if __name__ == "__main__":
    main()
