"""The multi-bit .potlut file: one model at several bit-widths in one file (docs/format.md §9).

A thin layer over the single-model format, which it uses only through its public writer
and reader (:func:`~potlut.compress.container.encode` / ``decode``) and weight coders::

    header (76 bytes): magic "\\x89POTLUTm", version, sizes, SHA-256, header CRC32
    base:              a complete single-model .potlut file of the widest width
    payload:           raw LZMA2 of the delta body: u32 JSON length, JSON, data

Every other width is stored as what differs from the base graph: node attributes that
differ (bit-widths, exponents), and arrays that differ (BatchNorm, activation scales,
weight codes of the low-bit layers). Arrays equal to the base's (the architecture, the
8-bit first/last layers, biases) are stored once. A layer's codes are stored *nested*
where the levels nest: the narrow code of each weight is a function of its base code
except in a few base-code buckets, so the file holds, per base code, the list of narrow
codes it maps to and, for weights whose bucket has more than one, the index into it
(``ceil(log2 k)`` bits); signs come from the base (a weight that is non-zero at the narrow
width is non-zero at the base width with the same sign, checked when writing). Where
that does not hold, or is not smaller, the layer is coded on its own with the file's coder.
numpy only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import lzma
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from potlut.compress.container import (
    CODERS,
    DTYPES,
    MAX_WEIGHTS,
    decode,
    encode,
    lzma_filters,
    refuse_json_constant,
)
from potlut.compress.graph import ModelGraph, Node
from potlut.compress.sharing import SharedWeights
from potlut.errors import PotlutFormatError
from potlut.fileio import atomic_write_bytes

MAGIC = b"\x89POTLUTm"
VERSION = 1
HEADER = struct.Struct("<8sHHQQQI32sI")
HEADER_SIZE = HEADER.size  # 76
MAX_DELTA = 1 << 28  # delta body bytes; widths beyond the base are small next to it
MAX_JSON = 1 << 20
MAX_WIDTHS = 16
MAX_MULTI_WEIGHTS = 2 * MAX_WEIGHTS  # coded weights one read decodes, base and widths together


def is_multibit(data: bytes) -> bool:
    """Whether ``data`` (or its first bytes) starts like a multi-bit file."""
    return data[: len(MAGIC)] == MAGIC


def is_multibit_file(path: str | Path) -> bool:
    """Whether the file at ``path`` is a multi-bit .potlut file (False if unreadable)."""
    try:
        with open(path, "rb") as f:
            return is_multibit(f.read(len(MAGIC)))
    except OSError:
        return False


@dataclass
class MultiInfo:
    """Sizes of a multi-bit file: the whole, the embedded base file, the delta payload, and
    per width the stored (stage-1) bytes of what only that width holds."""

    widths: list[int]
    base_bits: int
    file_bytes: int
    base_bytes: int
    payload_bytes: int
    delta_bytes: int
    own_bytes: dict[int, int] = field(default_factory=dict)
    shared_bytes: int = 0
    nested: dict[int, list[str]] = field(default_factory=dict)


# ------------------------------------------------------------------ writing

def _dtype_name(a: np.ndarray) -> str:
    for k, v in DTYPES.items():
        if a.dtype == v or (a.dtype.kind == v.kind and a.dtype.itemsize == v.itemsize):
            return k
    raise PotlutFormatError(f"arrays of dtype {a.dtype} cannot be stored")


def _equal(a: np.ndarray, b: np.ndarray | None) -> bool:
    return (b is not None and a.shape == b.shape and _dtype_name(a) == _dtype_name(b)
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def _bits_for(k: int) -> int:
    return max(1, math.ceil(math.log2(k))) if k > 1 else 0


def _nest(base_codes: np.ndarray, base_neg: np.ndarray, codes: np.ndarray,
          neg: np.ndarray, codebook: np.ndarray) -> tuple[list[list[int]], bytes] | None:
    """``(candidates per base code, packed selection indices)``, or None where the narrow
    signs cannot be derived from the base's (``negative = base negative & non-zero``)."""
    nonzero = (codebook != 0)[codes.astype(np.int64)]
    if not np.array_equal(neg, base_neg & nonzero):
        return None
    bc, nc = base_codes.reshape(-1).astype(np.int64), codes.reshape(-1).astype(np.int64)
    n_base = int(bc.max()) + 1 if bc.size else 1
    keys = bc * 65536 + nc
    pairs = np.unique(keys)
    cands: list[list[int]] = [[] for _ in range(n_base)]
    for p in pairs.tolist():
        cands[p // 65536].append(p % 65536)
    if any(not c for c in cands):  # a base code no weight uses: any candidate will do
        cands = [c or [0] for c in cands]
    width = _bits_for(max(len(c) for c in cands))
    if width == 0:
        return cands, b""
    ambiguous = np.array([len(c) > 1 for c in cands])[bc]
    sel = (np.searchsorted(pairs, keys[ambiguous])
           - np.searchsorted(pairs, bc[ambiguous] * 65536))
    bits = ((sel[:, None] >> np.arange(width)) & 1).astype(np.uint8)
    return cands, np.packbits(bits.reshape(-1), bitorder="little").tobytes()


NEST_CHUNK = 1 << 20  # weights per step of _unnest: its temporaries stay ~30 MB at any size


def _unnest(cands: list[list[int]], blob: bytes, base_codes: np.ndarray,
            base_neg: np.ndarray, codebook: np.ndarray, dtype: np.dtype
            ) -> tuple[np.ndarray, np.ndarray]:
    """Codes and signs of a nested layer, decoded in chunks of :data:`NEST_CHUNK` weights
    (never an int64 copy of the whole layer)."""
    src = base_codes.reshape(-1)
    if src.size and int(src.max()) >= len(cands):
        raise PotlutFormatError("nested codes: a base code has no candidate list")
    if any(not c for c in cands) or any(x >= len(codebook) for c in cands for x in c):
        raise PotlutFormatError("nested codes: candidate outside the codebook")
    if any(a >= b for c in cands for a, b in zip(c[:-1], c[1:], strict=True)):
        raise PotlutFormatError("nested codes: a candidate list is not strictly ascending")
    width = _bits_for(max((len(c) for c in cands), default=1))
    lens = np.array([len(c) for c in cands], np.int64)
    starts = np.cumsum(lens) - lens
    flat = np.array([x for c in cands for x in c], np.int64)
    first, ambiguous, nonzero = flat[starts], lens > 1, codebook != 0
    chunks = range(0, src.size, NEST_CHUNK)
    n_amb = sum(int(ambiguous[src[i : i + NEST_CHUNK]].sum()) for i in chunks)
    if len(blob) != (n_amb * width + 7) // 8:
        raise PotlutFormatError(f"nested codes: {len(blob)} bytes of selections, expected "
                                f"{(n_amb * width + 7) // 8}")
    codes, neg = np.empty(src.size, dtype), np.empty(src.size, bool)
    pos = 0  # bit position of the next selection index
    for i in chunks:
        bc = src[i : i + NEST_CHUNK].astype(np.int64)
        out = first[bc]
        amb = ambiguous[bc]
        m = int(amb.sum())
        if m:
            lo = pos // 8
            raw = np.frombuffer(blob[lo : (pos + m * width + 7) // 8], np.uint8)
            bits = np.unpackbits(raw, bitorder="little")[pos - 8 * lo :][: m * width]
            sel = (bits.reshape(m, width).astype(np.int64) << np.arange(width)).sum(1)
            which = bc[amb]
            if (sel >= lens[which]).any():
                raise PotlutFormatError("nested codes: selection index outside its "
                                        "candidate list")
            out[amb] = flat[starts[which] + sel]
            pos += m * width
        codes[i : i + NEST_CHUNK] = out
        neg[i : i + NEST_CHUNK] = base_neg.reshape(-1)[i : i + NEST_CHUNK] & nonzero[out]
    return codes.reshape(base_codes.shape), neg.reshape(base_codes.shape)


def _patch(base: ModelGraph, g: ModelGraph, bits: int) -> dict[str, Any]:
    """Node attributes of ``g`` that differ from ``base`` (same nodes required)."""
    same = [(n.name, n.op, n.inputs) for n in base.nodes] == [
        (n.name, n.op, n.inputs) for n in g.nodes]
    if not same or tuple(base.in_shape) != tuple(g.in_shape):
        raise PotlutFormatError(f"width {bits}: the graph differs from the base width's; a "
                                "multi-bit file holds one architecture")
    return {n.name: n.attrs for n, m in zip(g.nodes, base.nodes, strict=True)
            if n.attrs != m.attrs}


def _coded_weights(g: ModelGraph) -> dict[str, str]:
    return {f"{n.attrs['module']}.weight": f"{n.attrs['module']}.weight.codebook"
            for n in g.quantized_layers()}


def _delta(base: ModelGraph, g: ModelGraph, bits: int, coder: str,
           parts: list[bytes], offset: int) -> tuple[dict[str, Any], int, list[str]]:
    """The JSON entry of width ``bits`` (arrays appended to ``parts``) and the new offset."""
    entries: list[dict[str, Any]] = []
    nested: list[str] = []

    def add(entry: dict[str, Any], blob: bytes) -> None:
        nonlocal offset
        entry.update(offset=offset, length=len(blob), crc32=zlib.crc32(blob))
        entries.append(entry)
        parts.append(blob)
        offset += len(blob)

    coded = _coded_weights(g)
    skip = {f"{w}.codes" for w in coded} | {f"{w}.negative" for w in coded}
    for name in sorted(g.arrays):
        a = g.arrays[name]
        if name in skip or _equal(a, base.arrays.get(name)):
            continue
        add({"name": name, "encoding": "raw", "dtype": _dtype_name(a),
             "shape": [int(s) for s in a.shape]}, np.ascontiguousarray(a).tobytes())
    for w, cb in coded.items():
        codes, neg = g.arrays[f"{w}.codes"], g.arrays[f"{w}.negative"]
        if (_equal(codes, base.arrays.get(f"{w}.codes"))
                and _equal(neg, base.arrays.get(f"{w}.negative"))):
            continue
        codebook = g.arrays[cb]
        own = CODERS[coder].encode(SharedWeights(codes, neg, codebook))
        meta = {"name": w, "dtype": _dtype_name(codes), "shape": [int(s) for s in codes.shape]}
        bcodes, bneg = base.arrays.get(f"{w}.codes"), base.arrays.get(f"{w}.negative")
        nest = None
        if bcodes is not None and bcodes.shape == codes.shape:
            nest = _nest(bcodes, bneg, codes, neg, codebook)
        if nest is not None and len(nest[1]) + 8 * sum(map(len, nest[0])) < len(own):
            add({**meta, "encoding": "nested", "candidates": nest[0]}, nest[1])
            nested.append(w)
        else:
            add({**meta, "encoding": coder}, own)
    drop = sorted(set(base.arrays) - set(g.arrays))
    return {"meta": g.meta, "nodes": _patch(base, g, bits), "drop": drop,
            "arrays": entries}, offset, nested


def encode_multi(graphs: dict[int, ModelGraph], coder: str = "shuff"
                 ) -> tuple[bytes, MultiInfo]:
    """One file holding ``graphs`` (bit-width -> graph of one architecture); the widest is
    the base, stored as a complete single-model file."""
    if not graphs or len(graphs) > MAX_WIDTHS:
        raise PotlutFormatError(f"a multi-bit file holds 1..{MAX_WIDTHS} widths, "
                                f"got {len(graphs)}")
    if coder not in CODERS:
        raise PotlutFormatError(f"unknown weight coder {coder!r}; known: {sorted(CODERS)}")
    widths = sorted(graphs)
    base_bits = widths[-1]
    base = graphs[base_bits]
    base_file, base_info = encode(base, coder)
    parts: list[bytes] = []
    offset = 0
    deltas: dict[str, Any] = {}
    nested: dict[int, list[str]] = {}
    own: dict[int, int] = {}
    for b in widths[:-1]:
        graphs[b].validate()
        start = offset
        deltas[str(b)], offset, nested[b] = _delta(base, graphs[b], b, coder, parts, offset)
        own[b] = offset - start
    doc = {"format": "potlut-multibit", "base": base_bits, "widths": widths, "deltas": deltas}
    js = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    body = struct.pack("<I", len(js)) + js + b"".join(parts)
    if len(js) > MAX_JSON or len(body) > MAX_DELTA:
        raise PotlutFormatError("multi-bit file exceeds the format's limits (docs/format.md)")
    filters = lzma_filters(len(body))
    payload = lzma.compress(body, format=lzma.FORMAT_RAW, filters=filters)
    dict_size = filters[0]["dict_size"]
    digest = hashlib.sha256(base_file + payload).digest()
    head = HEADER.pack(MAGIC, VERSION, HEADER_SIZE, len(base_file), len(body), len(payload),
                       dict_size, digest, 0)
    head = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))
    data = head + base_file + payload
    differs = _differing_base_arrays(base, [graphs[b] for b in widths[:-1]])
    own[base_bits] = sum(e.length for e in base_info.arrays if e.name in differs)
    shared = sum(e.length for e in base_info.arrays if e.name not in differs)
    info = MultiInfo(widths, base_bits, len(data), len(base_file), len(payload), len(body),
                     {b: own[b] for b in widths}, shared, nested)
    return data, info


def _differing_base_arrays(base: ModelGraph, others: list[ModelGraph]) -> set[str]:
    """Base array-table names (coded weights by their weight name) some width stores apart."""
    out = set()
    coded = _coded_weights(base)
    for name, a in base.arrays.items():
        if any(not _equal(a, g.arrays.get(name)) for g in others):
            key = name.rsplit(".", 1)[0] if name.rsplit(".", 1)[0] in coded else name
            out.add(key)
    return out


def save_multi(graphs: dict[int, ModelGraph], path: str | Path, coder: str = "shuff"
               ) -> MultiInfo:
    """Write the multi-bit file atomically."""
    data, info = encode_multi(graphs, coder)
    atomic_write_bytes(path, data)
    return info


# ------------------------------------------------------------------ reading

def _bad(msg: str) -> PotlutFormatError:
    return PotlutFormatError(msg)


def _parse(data: bytes) -> tuple[bytes, dict[str, Any], bytes]:
    """Check header and payload; return (base file, JSON document, delta data)."""
    if not is_multibit(data):
        raise _bad("not a multi-bit .potlut file (wrong magic bytes)")
    if len(data) < HEADER_SIZE:
        raise _bad(f"truncated file: {len(data)} bytes, the header alone needs {HEADER_SIZE}")
    (_, version, hsize, base_len, body_size, payload_size, dict_size, digest,
     crc) = HEADER.unpack_from(data)
    if version != VERSION:
        raise _bad(f"multi-bit format version {version} is unknown to this reader "
                   f"(reads version {VERSION})")
    if zlib.crc32(data[: HEADER_SIZE - 4]) != crc:
        raise _bad("header checksum mismatch: the file is corrupted")
    if hsize != HEADER_SIZE or HEADER_SIZE + base_len + payload_size != len(data):
        raise _bad(f"file of {len(data)} bytes does not match its header's sizes")
    if body_size > MAX_DELTA or body_size > 16 * payload_size + (1 << 20):
        raise _bad(f"declared delta size {body_size} is larger than the file can hold")
    if dict_size > lzma_filters(body_size)[0]["dict_size"] or dict_size < 1 << 12:
        raise _bad(f"LZMA2 dictionary size {dict_size} does not fit a {body_size}-byte body")
    if hashlib.sha256(data[HEADER_SIZE:]).digest() != digest:
        raise _bad("payload checksum (SHA-256) mismatch: the file is corrupted")
    base = data[HEADER_SIZE : HEADER_SIZE + base_len]
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW,
                                filters=[{"id": lzma.FILTER_LZMA2, "dict_size": dict_size}])
    try:
        body = dec.decompress(data[HEADER_SIZE + base_len :], max_length=body_size + 1)
    except lzma.LZMAError as exc:
        raise _bad(f"delta payload cannot be decompressed ({exc})") from None
    if len(body) != body_size or not dec.eof:
        raise _bad("delta payload decompresses to the wrong size")
    (jlen,) = struct.unpack_from("<I", body) if len(body) >= 4 else (None,)
    if jlen is None or jlen > MAX_JSON or 4 + jlen > len(body):
        raise _bad("delta body too short for its JSON")
    try:
        doc = json.loads(body[4 : 4 + jlen].decode("utf-8"), parse_constant=refuse_json_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):  # NaN/Infinity too, as written
        raise _bad("multi-bit JSON is malformed") from None
    if not isinstance(doc, dict) or doc.get("format") != "potlut-multibit":
        raise _bad("multi-bit JSON is not a potlut multi-bit document")
    return base, doc, body[4 + jlen :]


def _widths(doc: dict[str, Any]) -> tuple[list[int], int]:
    widths, base = doc.get("widths"), doc.get("base")
    if (not isinstance(widths, list) or not all(type(w) is int for w in widths)
            or not 1 <= len(widths) <= MAX_WIDTHS or widths != sorted(set(widths))
            or base != widths[-1] or not isinstance(doc.get("deltas"), dict)
            or sorted(doc["deltas"]) != sorted(str(w) for w in widths[:-1])):
        raise _bad("multi-bit JSON: widths, base and deltas do not agree")
    return widths, base


def _coded_count(g: ModelGraph) -> int:
    return sum(int(a.size) for k, a in g.arrays.items() if k.endswith(".codes"))


def _apply(base: ModelGraph, delta: Any, data: bytes, bits: int, budget: list[int]
           ) -> ModelGraph:
    """The graph of width ``bits``. Every coded entry must name a coded layer of the base
    with the same shape, at most once, and ``budget[0]`` (coded weights this read may still
    decode) pays for it: all checked *before* a weight stream is decoded, so a small file
    cannot declare more weights than its architecture holds."""
    if not isinstance(delta, dict) or not all(
            isinstance(delta.get(k), t) for k, t in
            (("meta", dict), ("nodes", dict), ("drop", list), ("arrays", list))):
        raise _bad(f"width {bits}: malformed delta")
    nodes = []
    for n in base.nodes:
        attrs = delta["nodes"].get(n.name, n.attrs)
        if not isinstance(attrs, dict):
            raise _bad(f"width {bits}: node {n.name} attributes are not an object")
        nodes.append(Node(n.name, n.op, list(n.inputs), copy.deepcopy(attrs)))
    if set(delta["nodes"]) - {n.name for n in base.nodes}:
        raise _bad(f"width {bits}: delta names nodes the graph does not have")
    if not all(isinstance(k, str) for k in delta["drop"]):
        raise _bad(f"width {bits}: malformed delta")
    arrays = {k: v for k, v in base.arrays.items() if k not in set(delta["drop"])}
    g = ModelGraph(tuple(base.in_shape), nodes, arrays, delta["meta"])
    end = 0
    seen: set[str] = set()
    for i, e in enumerate(delta["arrays"]):
        where = f"width {bits} array {i}"
        if not isinstance(e, dict) or not all(
                isinstance(e.get(k), int) for k in ("offset", "length", "crc32")):
            raise _bad(f"{where}: malformed entry")
        name, enc, dt, shape = e.get("name"), e.get("encoding"), e.get("dtype"), e.get("shape")
        if (not isinstance(name, str) or dt not in DTYPES or not isinstance(shape, list)
                or not all(type(s) is int and 0 <= s < 1 << 31 for s in shape)
                or len(shape) > 8):
            raise _bad(f"{where}: malformed entry")
        if name in seen:
            raise _bad(f"{where} ({name}): a second entry for the same array")
        seen.add(name)
        if e["offset"] != end or e["length"] < 0 or end + e["length"] > len(data):
            raise _bad(f"{where} ({name}): outside the delta data or not contiguous")
        blob = data[end : end + e["length"]]
        end += e["length"]
        if zlib.crc32(blob) != e["crc32"]:
            raise _bad(f"{where} ({name}): checksum mismatch")
        if math.prod(shape) > 1 << 24:
            raise _bad(f"{where} ({name}): too many elements")
        if enc == "raw":
            dtype = DTYPES[dt]
            if math.prod(shape) * dtype.itemsize != len(blob):
                raise _bad(f"{where} ({name}): {len(blob)} bytes do not hold shape {shape}")
            a = np.frombuffer(blob, dtype).reshape(shape)
            if dtype == np.dtype(bool) and (np.frombuffer(blob, np.uint8) > 1).any():
                raise _bad(f"{where} ({name}): boolean bytes other than 0 and 1")
            g.arrays[name] = a.astype(dtype.newbyteorder("="))
            continue
        if dt not in ("uint8", "uint16"):
            raise _bad(f"{where} ({name}): weight codes must be uint8 or uint16")
        bcodes = base.arrays.get(f"{name}.codes")
        if bcodes is None or list(bcodes.shape) != shape:
            raise _bad(f"{where} ({name}): the base graph has no coded layer {name} of "
                       f"shape {shape}")
        budget[0] -= int(bcodes.size)
        if budget[0] < 0:
            raise _bad(f"{where} ({name}): more than {MAX_MULTI_WEIGHTS} coded weights "
                       "in one read of the file")
        codebook = g.arrays.get(f"{name}.codebook")
        if codebook is None or codebook.ndim != 1 or codebook.dtype.kind != "f":
            raise _bad(f"{where} ({name}): no float codebook {name}.codebook")
        if enc == "nested":
            cands = e.get("candidates")
            bneg = base.arrays.get(f"{name}.negative")
            if (not isinstance(cands, list) or bneg is None or len(cands) > 1 << 16
                    or not all(isinstance(c, list) and all(type(x) is int and x >= 0 for x in c)
                               for c in cands)):
                raise _bad(f"{where} ({name}): nested codes without a matching base layer")
            codes, neg = _unnest(cands, bytes(blob), bcodes, bneg, codebook, DTYPES[dt])
        elif enc in CODERS:
            try:
                sw = CODERS[enc].decode(bytes(blob), tuple(shape), codebook)
            except PotlutFormatError as exc:
                raise _bad(f"{where} ({name}): {exc}") from None
            codes, neg = sw.codes.astype(DTYPES[dt]), sw.negative
        else:
            raise _bad(f"{where} ({name}): unknown encoding {enc!r}")
        g.arrays[f"{name}.codes"], g.arrays[f"{name}.negative"] = codes, neg
    if end != len(data):
        raise _bad(f"width {bits}: arrays cover {end} of its {len(data)} delta bytes")
    try:
        g.validate()
    except PotlutFormatError as exc:
        raise _bad(f"width {bits}: {exc}") from None
    return g


def decode_multi(data: bytes, bits: int | None = None
                 ) -> tuple[dict[int, ModelGraph], MultiInfo]:
    """The graphs of a multi-bit file (all widths, or only ``bits``) and its sizes."""
    graphs, info, _ = _read(data, bits)
    return graphs, info


def _read(data: bytes, bits: int | None
          ) -> tuple[dict[int, ModelGraph], MultiInfo, tuple[Any, dict[str, Any], bytes]]:
    """:func:`decode_multi` and what :func:`multibit_stats` needs besides: (the base file's
    info, the JSON document, the delta data)."""
    base_file, doc, delta_data = _parse(data)
    widths, base_bits = _widths(doc)
    if bits is not None and bits not in widths:
        raise _bad(f"the file holds bit-widths {','.join(map(str, widths))}, not {bits}")
    base, base_info = decode(base_file)
    lengths = {}
    for w in widths[:-1]:
        entries = doc["deltas"][str(w)].get("arrays")
        lengths[w] = sum(e.get("length", 0) for e in entries if isinstance(e, dict)) \
            if isinstance(entries, list) else 0
    if sum(lengths.values()) != len(delta_data):
        raise _bad(f"delta arrays cover {sum(lengths.values())} of {len(delta_data)} bytes")
    graphs: dict[int, ModelGraph] = {}
    budget = [MAX_MULTI_WEIGHTS - _coded_count(base)]
    start = 0
    for w in widths[:-1]:
        if bits is None or bits == w:
            rel = _rebase(doc["deltas"][str(w)], start)
            graphs[w] = _apply(base, rel, delta_data[start : start + lengths[w]], w,
                               budget)
        start += lengths[w]
    if bits is None or bits == base_bits:
        graphs[base_bits] = base
    info = MultiInfo(widths, base_bits, len(data), len(base_file),
                     len(data) - HEADER_SIZE - len(base_file), len(delta_data) + 4,
                     {w: lengths[w] for w in widths[:-1]})
    return graphs, info, (base_info, doc, delta_data)


def _rebase(delta: Any, start: int) -> Any:
    """A width's delta with array offsets relative to its own slice of the data."""
    if not isinstance(delta, dict) or not isinstance(delta.get("arrays"), list):
        return delta
    arrays = [({**e, "offset": e["offset"] - start}
               if isinstance(e, dict) and isinstance(e.get("offset"), int) else e)
              for e in delta["arrays"]]
    return {**delta, "arrays": arrays}


def read_multi(path: str | Path, bits: int | None = None
               ) -> tuple[dict[int, ModelGraph], MultiInfo]:
    """:func:`decode_multi` of the file at ``path`` (errors name the file)."""
    graphs, info, _ = _read_file(path, bits)
    return graphs, info


def _read_file(path: str | Path, bits: int | None
               ) -> tuple[dict[int, ModelGraph], MultiInfo, tuple[Any, dict[str, Any], bytes]]:
    """:func:`_read` of the file at ``path``; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PotlutFormatError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return _read(data, bits)
    except PotlutFormatError as exc:
        raise PotlutFormatError(f"{path}: {exc}") from None


def load_width(path: str | Path, bits: int | None = None) -> ModelGraph:
    """The graph of width ``bits`` (default: the widest) of a multi-bit file."""
    graphs, info = read_multi(path, bits)
    return graphs[bits if bits is not None else info.base_bits]


def file_bits(graph: ModelGraph) -> int | None:
    """The bit-width of a single-width graph: its ``meta["bits"]``, else the one weight
    bit-width of its middle quantized layers (None when neither says)."""
    if type(graph.meta.get("bits")) is int:
        return graph.meta["bits"]
    middle = {n.attrs["weight"]["bits"] for n in graph.quantized_layers()[1:-1]}
    return middle.pop() if len(middle) == 1 else None


def open_graph(path: str | Path, bits: int | None = None) -> ModelGraph:
    """The graph of a single- or multi-bit .potlut file at width ``bits`` (default: the
    file's only width, or a multi-bit file's widest)."""
    from potlut.compress.container import load

    if is_multibit_file(path):
        return load_width(path, bits)
    graph = load(path)
    if bits is not None and file_bits(graph) != bits:
        raise PotlutFormatError(f"{path}: a single-width file of {file_bits(graph)} bits; "
                                f"it cannot run at {bits} bits")
    return graph


def _lzma_len(blob: bytes) -> int:
    if not blob:
        return 0
    return len(lzma.compress(blob, format=lzma.FORMAT_RAW, filters=lzma_filters(len(blob))))


def multibit_stats(path: str | Path) -> dict[str, Any]:
    """What ``potlut inspect`` shows of a multi-bit file: per width the stage-1 bytes only it
    holds (and those LZMA-compressed alone), the shared bytes, and every width encoded as a
    separate single-width file for comparison."""
    graphs, info, (base_info, doc, delta) = _read_file(path, None)
    coder = base_info.coder if base_info.coder in CODERS else "shuff"
    base = graphs[info.base_bits]
    differs = _differing_base_arrays(base, [graphs[w] for w in info.widths[:-1]])
    view = base_info.data
    rows, start = [], 0
    for w in info.widths:
        if w == info.base_bits:
            own = [e for e in base_info.arrays if e.name in differs]
            blob = b"".join(view[e.offset : e.offset + e.length] for e in own)
            nested: list[str] = []
        else:
            entries = doc["deltas"][str(w)]["arrays"]
            blob = delta[start : start + info.own_bytes[w]]
            start += info.own_bytes[w]
            nested = [e["name"] for e in entries if e["encoding"] == "nested"]
        rows.append({"bits": w, "stored_bytes": len(blob), "lzma_bytes": _lzma_len(blob),
                     "separate_file_bytes": len(encode(graphs[w], coder)[0]),
                     "nested": nested})
    shared = [e for e in base_info.arrays if e.name not in differs]
    shared_blob = b"".join(view[e.offset : e.offset + e.length] for e in shared)
    return {"file": str(path), "widths": info.widths, "base_bits": info.base_bits,
            "file_bytes": info.file_bytes, "base_file_bytes": info.base_bytes,
            "delta_payload_bytes": info.payload_bytes, "per_width": rows,
            "shared_bytes": len(shared_blob), "shared_lzma_bytes": _lzma_len(shared_blob),
            "separate_bytes": sum(r["separate_file_bytes"] for r in rows), "coder": coder}
