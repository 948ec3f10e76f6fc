"""The .potlut container: a checked header, then one LZMA2 stream holding the body.

Layout (all integers little-endian; full description in docs/format.md)::

    header (80 bytes): magic, version, sizes, LZMA2 dictionary size, SHA-256 of the
                       compressed payload, CRC32 of the header itself
    payload:           raw LZMA2 stream of the body
    body:              u32 section count, (tag, u64 length) per section, sections:
                       ARCH = UTF-8 JSON (the graph; compact from version 4, see
                       :mod:`potlut.compress.archjson`), ARRS = binary array table in the
                       order the graph fixes, DATA = array payloads (raw, derived from
                       attributes, scaled integers, or a weight stream)

One integrity layer: the header CRC and the payload's SHA-256 cover every byte, so the
body carries no checksums of its own. Reading checks everything before trusting it:
magic, version, header CRC, declared sizes against the file and sane bounds, the payload
hash, the decompressed size, the JSON schema, the array table against the graph (before
any array is decoded), and finally the graph itself. Any failure is a
:class:`PotlutFormatError` naming the problem. No pickle, no eval: JSON and numpy
``frombuffer`` only.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from potlut.compress import archjson, rans, shuff
from potlut.compress.codebooks import derived_codebook
from potlut.compress.graph import ModelGraph, Node
from potlut.compress.schema import ArraySpec, required_arrays
from potlut.compress.sharing import SharedWeights, pack_raw, unpack_raw
from potlut.errors import PotlutFormatError
from potlut.fileio import atomic_write_bytes

MAGIC = b"\x89POTLUT\n"
VERSION = 4
READS = (2, 3, 4)  # 3 is 4 with the full architecture JSON; 2 is 3 without ``scaled``
HEADER = struct.Struct("<8sHHIQQII32sII")  # see docs/format.md §2
HEADER_SIZE = HEADER.size  # 80
CODEC_LZMA2 = 1
SECTION = struct.Struct("<4sQ")  # tag, length
SECTION_TAGS = (b"ARCH", b"ARRS", b"DATA")
MAX_BODY = 1 << 30  # 1 GiB: no model we write comes near; larger declarations are rejected
MAX_RATIO = 16  # body may be at most this many times the payload (+ 1 MiB); coded weights
#                 do not compress, so real files stay near 1x and an LZMA bomb is refused
MAX_ARCH = 1 << 20  # architecture JSON bytes (ResNet20: 14 KB); bounds the parsed objects
MAX_WEIGHTS = 1 << 24  # coded weights in one file, all layers together (ResNet18: 11.7M)
MAX_DIM = (1 << 31) - 1  # largest extent of one array axis
MAX_NDIM = 8
MIN_DICT, MAX_DICT = 1 << 12, 1 << 26
DTYPES = {
    "bool": np.dtype(bool), "uint8": np.dtype("u1"), "int8": np.dtype("i1"),
    "uint16": np.dtype("<u2"), "int16": np.dtype("<i2"), "uint32": np.dtype("<u4"),
    "int32": np.dtype("<i4"), "int64": np.dtype("<i8"), "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"), "float64": np.dtype("<f8"),
}


# ------------------------------------------------------------ weight coders

WeightEncoder = Callable[[SharedWeights], bytes]
WeightDecoder = Callable[[bytes, tuple[int, ...], np.ndarray], SharedWeights]


@dataclass(frozen=True)
class WeightCoder:
    """How one kind of weight stream is written and read.

    ``side_bytes(blob, n_codes)`` is the length of the blob's leading side information
    (code tables), which counts as overhead, not as coded weights, in the size bounds.
    """

    encode: WeightEncoder
    decode: WeightDecoder
    side_bytes: Callable[[bytes, int], int] = lambda blob, n_codes: 0


def _raw_decode(blob: bytes, shape: tuple[int, ...], codebook: np.ndarray) -> SharedWeights:
    count = math.prod(shape)
    codes, neg = unpack_raw(blob, count, len(codebook))
    if (neg & (codebook == 0)[codes]).any():  # the writer never sets it: a corrupt file
        raise PotlutFormatError("sign bit set on a weight whose value is zero")
    return SharedWeights(codes.reshape(shape), neg.reshape(shape), codebook)


CODERS: dict[str, WeightCoder] = {
    "shuff": WeightCoder(shuff.encode_weights, shuff.decode_weights, shuff.side_bytes),
    "packed": WeightCoder(lambda sw: pack_raw(sw.codes, sw.negative, sw.n_codes), _raw_decode),
    "rans": WeightCoder(rans.encode_weights, rans.decode_weights,
                        lambda blob, n_codes: rans.side_bytes(n_codes)),
}


def register_coder(name: str, coder: WeightCoder) -> None:
    """Make a weight coder selectable per file (``save(..., coder=name)``)."""
    CODERS[name] = coder


# ------------------------------------------------------------ writing

RAW, DERIVED, SCALED = "raw", "derived", "scaled"
ENCODING_IDS = {RAW: 0, DERIVED: 1, "shuff": 2, "rans": 3, "packed": 4, SCALED: 5}
DTYPE_IDS = {name: i for i, name in enumerate(DTYPES)}
ENTRY = struct.Struct("<BBI")  # encoding id, dtype id, length in DATA


@dataclass
class ArrayEntry:
    """One stored array: where it lives in the DATA section and how it is encoded.

    ``name`` is ``<m>.weight`` for a coded weight (it decodes to ``<m>.weight.codes`` and
    ``<m>.weight.negative``); ``codebook`` names the codebook such an entry decodes over.
    """

    name: str
    encoding: str  # "raw", "derived" or a weight coder name
    dtype: str
    shape: list[int]
    offset: int
    length: int
    codebook: str | None = None


@dataclass
class FileInfo:
    """Facts about an encoded file: sizes of every part (for ``inspect`` and bounds)."""

    version: int
    file_bytes: int
    payload_bytes: int
    body_bytes: int
    arch_bytes: int
    dict_size: int
    coder: str
    arrays: list[ArrayEntry] = field(default_factory=list)
    data: bytes = field(default=b"", repr=False)  # the DATA section (array payloads)
    table_bytes: int = 0


@dataclass
class Body:
    """Stage 1 output: the uncompressed body and where everything sits in it."""

    body: bytes
    arrays: list[ArrayEntry]
    arch_bytes: int
    data: bytes


@dataclass(frozen=True)
class Slot:
    """One entry of the array table, in the order the graph fixes (docs/format.md §2)."""

    name: str
    spec: ArraySpec
    coded: bool  # a quantized layer's weight: codes and signs in one weight stream
    codebook: np.ndarray | None  # what a ``derived`` entry stands for (None: not derivable)


def slots(graph: ModelGraph, specs: dict[str, ArraySpec]) -> list[Slot]:
    """The array table's entries in order: the graph's required arrays (node order), with a
    quantized layer's ``.codes`` and ``.negative`` as one coded ``<m>.weight`` entry."""
    derivable: dict[str, Any] = {}
    for n in graph.nodes:
        if n.op in ("conv2d", "linear"):
            mod = n.attrs.get("module")
            derivable[f"{mod}.weight.codebook"] = n.attrs.get("weight")
            derivable[f"{mod}.act.codebook"] = n.attrs.get("act")
    out = []
    for key, spec in specs.items():  # (kinds tell codes and signs from a state so named)
        if key.endswith(".weight.negative") and spec.kinds == "b":
            continue
        if key.endswith(".weight.codes") and spec.kinds == "u":
            out.append(Slot(key[: -len(".codes")], spec, True, None))
        else:
            cb = derived_codebook(derivable[key]) if key in derivable else None
            out.append(Slot(key, spec, False, cb))
    return out


def _dtype_name(a: np.ndarray) -> str:
    for k, v in DTYPES.items():
        if a.dtype == v or (a.dtype.kind == v.kind and a.dtype.itemsize == v.itemsize):
            return k
    raise PotlutFormatError(f"arrays of dtype {a.dtype} cannot be stored")


def raw_bytes(a: np.ndarray) -> bytes:
    """A raw array as stored: little-endian, C order, as byte planes (byte 0 of every
    element, then byte 1, ...): the sign/exponent bytes of floats sit together, which
    LZMA compresses (BatchNorm of ResNet20: 5,074 -> 4,736 B)."""
    dt = DTYPES[_dtype_name(a)]
    flat = np.ascontiguousarray(a, dtype=dt).reshape(-1)
    return np.frombuffer(flat.tobytes(), np.uint8).reshape(-1, dt.itemsize).T.tobytes()


SCALED_HEAD = struct.Struct("<h")  # the exponent e of a ``scaled`` array


def scaled_bytes(a: np.ndarray) -> bytes | None:
    """A float32 array as ``q * 2^e`` with integers of 1 to 3 bytes (docs/format.md §2), or
    None where that is not exact or not shorter than raw float32.

    ``e`` is the largest exponent that holds every value exactly; BatchNorm folded to
    8-bit block floating point (``potlut.nn.export.block_round``) takes 1 byte a
    value instead of 4.
    """
    if a.dtype != np.float32 or not np.isfinite(a).all() or np.signbit(a[a == 0]).any():
        return None  # (-0.0 would come back as +0.0)
    v = a.astype(np.float64).reshape(-1)
    nz = v[v != 0]
    if nz.size == 0:
        e = 0
    else:  # exponent of each value's lowest set bit: m * 2^(x - 24) with a 24-bit m
        m, x = np.frexp(nz)
        mi = (m * 2.0**24).astype(np.int64)
        e = int((x - 24 + _trailing_zeros(mi)).min())
    qf = np.ldexp(v, -e)  # exact integers in float64; compared before any cast
    if float(np.abs(qf).max(initial=0.0)) >= 1 << 23:
        return None
    q = qf.astype(np.int64)
    big = int(np.abs(q).max(initial=0))
    nb = next((k for k in (1, 2, 3) if big < 1 << (8 * k - 1)), None)
    if nb is None or not -(1 << 15) <= e < 1 << 15:
        return None
    planes = q.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :nb].T
    return SCALED_HEAD.pack(e) + planes.tobytes()


def _trailing_zeros(x: np.ndarray) -> np.ndarray:
    low = x & -x  # lowest set bit (x > 0)
    return np.frexp(low.astype(np.float64))[1] - 1


def _from_scaled(blob: memoryview, name: str, shape: list[int]) -> np.ndarray:
    """Inverse of :func:`scaled_bytes`; the value width follows from the checked length."""
    (e,) = SCALED_HEAD.unpack_from(blob)
    count = math.prod(shape)
    nb = (len(blob) - SCALED_HEAD.size) // count if count else 1
    planes = np.frombuffer(blob[SCALED_HEAD.size:], np.uint8).reshape(nb, count)
    q = np.zeros(count, np.int64)
    for k in range(nb):
        q |= planes[k].astype(np.int64) << (8 * k)
    q -= (q >> (8 * nb - 1)) << (8 * nb)  # two's complement
    with np.errstate(over="ignore", under="ignore"):
        out = np.ldexp(q.astype(np.float64), e).astype(np.float32)
        back = np.ldexp(out.astype(np.float64), -e)  # exact iff no overflow or rounding
    if not (np.isfinite(out).all() and np.array_equal(back, q)):
        raise _bad(f"array {name!r}: scaled values q * 2^{e} are not exact float32 numbers")
    return out.reshape(shape)


def _from_raw(blob: memoryview, dt: np.dtype, shape: list[int]) -> np.ndarray:
    """Inverse of :func:`raw_bytes` (the length is checked against the shape before)."""
    planes = np.frombuffer(blob, np.uint8).reshape(dt.itemsize, -1)
    return np.ascontiguousarray(planes.T).view(dt).reshape(shape).astype(dt.newbyteorder("="))


def lzma_filters(body_size: int) -> list[dict[str, Any]]:
    """LZMA2 at preset 9e, no literal context (lc=lp=pb=0), dictionary <= body size.

    The body is mostly Huffman streams, which look random: literal contexts only cost
    there (measured on the digits model: lc=0/pb=0 makes the file 1% smaller than the
    defaults lc=3/pb=2). The decoder needs only the dictionary size; LZMA2 chunks carry
    lc/lp/pb themselves.
    """
    dict_size = MIN_DICT
    while dict_size < body_size and dict_size < MAX_DICT:
        dict_size <<= 1
    return [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size,
             "lc": 0, "lp": 0, "pb": 0}]


def _sections(parts: list[tuple[bytes, bytes]]) -> bytes:
    return struct.pack("<I", len(parts)) + b"".join(
        SECTION.pack(tag, len(blob)) for tag, blob in parts) + b"".join(b for _, b in parts)


def build_body(graph: ModelGraph, coder: str = "shuff", skip_weights: bool = False,
               keep_tables: bool = True, version: int = VERSION) -> Body:
    """Stage 1: the uncompressed body (section table, ARCH JSON, ARRS table, DATA).

    ``skip_weights`` keeps only each weight stream's side information (code tables), or
    nothing of it with ``keep_tables=False``: the rest of the file is the measured
    overhead of :mod:`potlut.compress.bounds`. ``version`` < 4 writes the full
    architecture JSON, and 2 no ``scaled`` arrays (for files older readers take).
    """
    if version not in READS:
        raise PotlutFormatError(f"cannot write format version {version}; writes {READS}")
    if coder not in CODERS:
        raise PotlutFormatError(f"unknown weight coder {coder!r}; known: {sorted(CODERS)}")
    wc = CODERS[coder]
    table, entries, raw_parts, coded_parts = [], [], [], []
    for s in slots(graph, required_arrays(graph)):
        if s.coded:
            codes = graph.arrays[f"{s.name}.codes"]
            cbname = f"{s.name}.codebook"
            sw = SharedWeights(codes, graph.arrays[f"{s.name}.negative"], graph.arrays[cbname])
            old = version < 4 and coder == "shuff"  # (no truncated binary tables before v4)
            blob = shuff.encode_weights(sw, truncated=False) if old else wc.encode(sw)
            if skip_weights:
                blob = blob[: wc.side_bytes(blob, sw.n_codes) if keep_tables else 0]
            enc, dtype, shape, cb = coder, _dtype_name(codes), list(codes.shape), cbname
            coded_parts.append(blob)
        else:
            a = graph.arrays[s.name]
            derived = (s.codebook is not None and a.dtype == np.float32
                       and np.array_equal(a, s.codebook))
            scaled = None if derived or version < 3 else scaled_bytes(a)
            if derived:
                enc, blob = DERIVED, b""
            elif scaled is not None and len(scaled) < a.nbytes:
                enc, blob = SCALED, scaled
            else:
                enc, blob = RAW, raw_bytes(a)
            dtype, shape, cb = _dtype_name(a), list(a.shape), None
            raw_parts.append(blob)
        row = ENTRY.pack(ENCODING_IDS[enc], DTYPE_IDS[dtype], len(blob))
        if s.spec.shape is None:
            row += struct.pack(f"<B{len(shape)}I", len(shape), *shape)
        table.append(row)
        entries.append(ArrayEntry(s.name, enc, dtype, [int(x) for x in shape], 0, len(blob), cb))
    offset = 0  # DATA: the non-coded arrays in table order, then the weight streams
    for e in sorted(entries, key=lambda e: e.encoding in CODERS):
        e.offset, offset = offset, offset + e.length
    arch = {"format": "potlut", "graph": _arch_graph(graph, version)}
    arch_bytes = json.dumps(arch, separators=(",", ":"), allow_nan=False).encode()
    arrs = struct.pack("<I", len(table)) + b"".join(table)
    data = b"".join(raw_parts + coded_parts)
    body = _sections([(b"ARCH", arch_bytes), (b"ARRS", arrs), (b"DATA", data)])
    return Body(body, entries, len(arch_bytes), data)


def _arch_graph(graph: ModelGraph, version: int) -> dict[str, Any]:
    """The ``graph`` member of ARCH: compact from version 4 on (checked to expand back)."""
    full = graph.architecture()
    if version < 4:
        return full
    small = archjson.compact(full)
    as_json = lambda x: json.loads(json.dumps(x, allow_nan=False))  # noqa: E731
    if archjson.expand(as_json(small)) != as_json(full):
        raise PotlutFormatError("architecture does not survive its compact form (a bug)")
    return small


def compress_body(body: bytes) -> tuple[bytes, int]:
    """Stage 2: raw LZMA2 over the body; returns ``(payload, dictionary size)``."""
    filters = lzma_filters(len(body))
    return lzma.compress(body, format=lzma.FORMAT_RAW, filters=filters), filters[0]["dict_size"]


def encode(graph: ModelGraph, coder: str = "shuff",
           version: int = VERSION) -> tuple[bytes, FileInfo]:
    """The complete file as bytes, plus its :class:`FileInfo` (``version``: see
    :func:`build_body`)."""
    graph.validate()
    b = build_body(graph, coder, version=version)
    if len(b.body) > MAX_BODY:
        raise PotlutFormatError(f"model body of {len(b.body)} bytes exceeds the {MAX_BODY} limit")
    payload, dict_size = compress_body(b.body)
    weights = sum(math.prod(e.shape) for e in b.arrays if e.encoding in CODERS)
    if (weights > MAX_WEIGHTS or b.arch_bytes > MAX_ARCH
            or len(b.body) > MAX_RATIO * len(payload) + (1 << 20)):  # what decode refuses
        raise PotlutFormatError(f"model exceeds the format's limits ({weights} coded weights, "
                                f"{b.arch_bytes} B architecture, body {len(b.body)} B for "
                                f"{len(payload)} B compressed); see docs/format.md")
    head = HEADER.pack(MAGIC, version, HEADER_SIZE, 0, len(b.body), len(payload), dict_size,
                       CODEC_LZMA2, hashlib.sha256(payload).digest(), 0, 0)
    head = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))
    data = head + payload
    info = FileInfo(version, len(data), len(payload), len(b.body), b.arch_bytes, dict_size,
                    coder, b.arrays, b.data)
    return data, info


def save(graph: ModelGraph, path: str | Path, coder: str = "shuff") -> FileInfo:
    """Write ``graph`` to ``path`` atomically (an interrupted write leaves no partial file)."""
    data, info = encode(graph, coder)
    atomic_write_bytes(path, data)
    return info


# ------------------------------------------------------------ reading

def _bad(msg: str) -> PotlutFormatError:
    return PotlutFormatError(msg)


def _parse_header(data: bytes) -> tuple[int, int, int, int]:
    """Check the header; return ``(body size, payload size, dictionary size, version)``."""
    n = len(data)
    if n == 0:
        raise _bad("empty file (not a .potlut model)")
    if data[: min(n, len(MAGIC))] != MAGIC[: min(n, len(MAGIC))]:
        raise _bad("not a .potlut file (wrong magic bytes)")
    if n < HEADER_SIZE:
        raise _bad(f"truncated file: {n} bytes, the header alone needs {HEADER_SIZE}")
    (_, version, hsize, flags, body_size, payload_size, dict_size, codec, digest,
     _reserved, crc) = HEADER.unpack_from(data)
    if version == 1:
        raise _bad("format version 1 (before the compact array table) is no longer read: "
                   "re-create the file from its run with `potlut compress RUN`")
    if version not in READS:
        newer = "newer than" if version > VERSION else "unknown to"
        raise _bad(f"format version {version} is {newer} this reader (reads versions "
                   f"{', '.join(map(str, READS))})")
    if zlib.crc32(data[: HEADER_SIZE - 4]) != crc:
        raise _bad("header checksum mismatch: the file is corrupted")
    if hsize != HEADER_SIZE or flags != 0 or codec != CODEC_LZMA2 or _reserved != 0:
        raise _bad("header has unsupported size, flags or codec")
    if HEADER_SIZE + payload_size > n:
        raise _bad(f"truncated file: header declares {payload_size} payload bytes, "
                   f"only {n - HEADER_SIZE} present")
    if HEADER_SIZE + payload_size < n:
        raise _bad(f"{n - HEADER_SIZE - payload_size} unexpected bytes after the payload")
    if body_size > MAX_BODY or body_size > MAX_RATIO * payload_size + (1 << 20):
        raise _bad(f"declared body size {body_size} is larger than the file can hold")
    if not MIN_DICT <= dict_size <= MAX_DICT:
        raise _bad(f"LZMA2 dictionary size {dict_size} outside {MIN_DICT}..{MAX_DICT}")
    if dict_size > lzma_filters(body_size)[0]["dict_size"]:  # the decoder allocates it
        raise _bad(f"LZMA2 dictionary size {dict_size} exceeds what a {body_size}-byte body uses")
    if hashlib.sha256(data[HEADER_SIZE:]).digest() != digest:
        raise _bad("payload checksum (SHA-256) mismatch: the file is corrupted")
    return body_size, payload_size, dict_size, version


def _decompress(payload: bytes, body_size: int, dict_size: int) -> bytes:
    dec = lzma.LZMADecompressor(
        format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": dict_size}]
    )
    try:
        body = dec.decompress(payload, max_length=body_size + 1)
    except lzma.LZMAError as exc:
        raise _bad(f"LZMA2 payload cannot be decompressed ({exc})") from None
    if len(body) != body_size or not dec.eof or dec.unused_data:
        raise _bad(f"payload decompresses to a body of the wrong size "
                   f"({len(body)}{'+' if not dec.eof else ''} bytes, {body_size} declared)")
    return body


def _split_sections(body: bytes) -> dict[bytes, bytes]:
    if len(body) < 4:
        raise _bad("body too short for its section table")
    (count,) = struct.unpack_from("<I", body)
    if count > 64 or 4 + count * SECTION.size > len(body):
        raise _bad(f"section table declares {count} sections, body too short")
    out: dict[bytes, bytes] = {}
    pos = 4 + count * SECTION.size
    for i in range(count):
        tag, length = SECTION.unpack_from(body, 4 + i * SECTION.size)
        if length > len(body) - pos:
            raise _bad(f"section {tag!r} declares {length} bytes, body too short")
        if tag not in SECTION_TAGS:
            raise _bad(f"unknown section {tag!r}")
        if tag in out:
            raise _bad(f"section {tag!r} repeated")
        out[tag] = body[pos : pos + length]
        pos += length
    if pos != len(body):
        raise _bad(f"{len(body) - pos} unexpected bytes after the last section")
    for tag in SECTION_TAGS:
        if tag not in out:
            raise _bad(f"section {tag.decode()} missing")
    return out


def _req(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise _bad(f"architecture: {where} has no {key!r}")
    v = d[key]
    if not isinstance(v, kind) or (isinstance(v, bool) and bool not in _tuple(kind)):
        raise _bad(f"architecture: {where}.{key} has the wrong type")
    return v


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _int_list(v: Any, where: str) -> list[int]:
    if not isinstance(v, list) or not all(type(x) is int and x >= 0 for x in v):
        raise _bad(f"architecture: {where} must be a list of non-negative integers")
    return v


def refuse_json_constant(name: str) -> Any:
    """``json.loads(parse_constant=...)``: NaN / Infinity are not JSON (writers use
    ``allow_nan=False``)."""
    raise ValueError(f"{name} is not JSON")


def _parse_arch(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_ARCH:
        raise _bad(f"architecture JSON of {len(raw)} bytes exceeds the {MAX_ARCH} limit")
    try:  # NaN / Infinity are refused as the writer refuses them (allow_nan=False)
        arch = json.loads(raw.decode("utf-8"), parse_constant=refuse_json_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(f"architecture JSON is malformed ({type(exc).__name__})") from None
    if not isinstance(arch, dict) or arch.get("format") != "potlut":
        raise _bad("architecture JSON is not a potlut architecture")
    return arch


def _read_table(arrs: bytes, table: list[Slot], data_len: int,
                version: int = VERSION) -> list[ArrayEntry]:
    """The binary array table against the graph's slots, before any array is decoded.

    One entry per slot, in order; an encoding the slot allows (a weight coder for a coded
    weight, ``derived`` only for a codebook with a formula), the dtype kind the graph
    requires, a shape where the graph leaves it open, lengths that fit their shape and
    tile DATA exactly, and at most :data:`MAX_WEIGHTS` coded weights in all.
    """
    if len(arrs) < 4 or struct.unpack_from("<I", arrs)[0] != len(table):
        raise _bad(f"array table does not hold the {len(table)} arrays the graph requires")
    pos, total, entries = 4, 0, []
    names = {i: n for n, i in ENCODING_IDS.items()}
    dtypes = list(DTYPES)
    for s in table:
        if pos + ENTRY.size > len(arrs):
            raise _bad("array table is truncated")
        enc_id, dt_id, length = ENTRY.unpack_from(arrs, pos)
        pos += ENTRY.size
        enc, dtype = names.get(enc_id), dtypes[dt_id] if dt_id < len(dtypes) else None
        if enc is None or dtype is None or (enc == SCALED and version < 3):
            raise _bad(f"array {s.name!r}: unknown encoding {enc_id} or dtype {dt_id}")
        shape = s.spec.shape
        if shape is None:
            if pos >= len(arrs) or pos + 1 + 4 * arrs[pos] > len(arrs):
                raise _bad("array table is truncated")
            nd = arrs[pos]
            shape = struct.unpack_from(f"<{nd}I", arrs, pos + 1)
            pos += 1 + 4 * nd
            if nd > MAX_NDIM or any(d > MAX_DIM for d in shape):
                raise _bad(f"array {s.name!r}: shape {list(shape)} is too large")
        count = math.prod(shape)
        if s.coded:
            if enc not in CODERS:
                raise _bad(f"array {s.name!r}: weight coder {enc!r} is not a weight coder")
            if dtype not in ("uint8", "uint16"):
                raise _bad(f"array {s.name!r}: weight codes must be uint8 or uint16")
            total += count
        else:
            if enc not in (RAW, DERIVED, SCALED):
                raise _bad(f"array {s.name!r}: encoding {enc!r} is not raw, derived or scaled")
            if DTYPES[dtype].kind not in s.spec.kinds:
                raise _bad(f"array {s.name!r} has dtype {dtype}, expected kind "
                           f"{s.spec.kinds!r}")
            if enc == DERIVED and (s.codebook is None or dtype != "float32"
                                   or length != 0 or count != len(s.codebook)):
                raise _bad(f"array {s.name!r} cannot be derived from its attributes")
            if enc == RAW and count * DTYPES[dtype].itemsize != length:
                raise _bad(f"array {s.name!r}: {length} bytes do not hold shape "
                           f"{list(shape)} of {dtype}")
            if enc == SCALED and (dtype != "float32" or not (
                    length == SCALED_HEAD.size if count == 0 else
                    length - SCALED_HEAD.size in (count, 2 * count, 3 * count))):
                raise _bad(f"array {s.name!r}: {length} scaled bytes do not hold shape "
                           f"{list(shape)} of float32")
        entries.append(ArrayEntry(s.name, enc, dtype, [int(d) for d in shape], 0, length,
                                  f"{s.name}.codebook" if s.coded else None))
    if pos != len(arrs):
        raise _bad(f"{len(arrs) - pos} unexpected bytes after the array table")
    if total > MAX_WEIGHTS:
        raise _bad(f"{total} coded weights exceed the limit of {MAX_WEIGHTS} per file")
    offset = 0
    for e in sorted(entries, key=lambda e: e.encoding in CODERS):
        e.offset, offset = offset, offset + e.length
    if offset != data_len:
        raise _bad(f"arrays cover {offset} of the {data_len} bytes of the data section")
    return entries


def _decode_arrays(entries: list[ArrayEntry], table: list[Slot],
                   data: bytes) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    view = memoryview(data)
    for e, s in zip(entries, table, strict=True):  # first the arrays coded weights need
        if e.encoding == DERIVED:
            arrays[e.name] = np.array(s.codebook, np.float32)
        if e.encoding == SCALED:
            arrays[e.name] = _from_scaled(view[e.offset : e.offset + e.length], e.name, e.shape)
        if e.encoding != RAW:
            continue
        blob = view[e.offset : e.offset + e.length]
        dt = DTYPES[e.dtype]
        if dt == np.dtype(bool):
            u = np.frombuffer(blob, np.uint8)
            if (u > 1).any():
                raise _bad(f"array {e.name!r}: boolean bytes other than 0 and 1")
            arrays[e.name] = u.astype(bool).reshape(e.shape)
        else:
            arrays[e.name] = _from_raw(blob, dt, e.shape)
    for e in entries:
        if e.encoding not in CODERS:
            continue
        codebook = arrays[e.codebook or ""]
        if codebook.ndim != 1 or codebook.dtype.kind != "f":
            raise _bad(f"array {e.name!r}: codebook {e.codebook!r} is not a float vector")
        if not 1 <= len(codebook) <= 65536 or not np.isfinite(codebook).all():
            raise _bad(f"array {e.name!r}: codebook has {len(codebook)} entries / non-finite")
        if len(codebook) > 1 << (8 * DTYPES[e.dtype].itemsize):
            raise _bad(f"array {e.name!r}: {len(codebook)} codes do not fit {e.dtype}")
        try:
            sw = CODERS[e.encoding].decode(bytes(view[e.offset : e.offset + e.length]),
                                           tuple(e.shape), codebook)
        except PotlutFormatError as exc:
            raise _bad(f"array {e.name!r}: {exc}") from None
        arrays[f"{e.name}.codes"] = sw.codes.astype(DTYPES[e.dtype], copy=False)
        arrays[f"{e.name}.negative"] = sw.negative
    return arrays


def _graph_from_arch(arch: dict[str, Any]) -> ModelGraph:
    """The graph of the architecture JSON, its structure checked, with no arrays yet."""
    g = _req(arch, "graph", dict, "root")
    in_shape = _int_list(_req(g, "in_shape", list, "graph"), "graph.in_shape")
    nodes = []
    for i, n in enumerate(_req(g, "nodes", list, "graph")):
        where = f"graph.nodes[{i}]"
        inputs = _req(n, "inputs", list, where)
        if not all(isinstance(x, str) for x in inputs):
            raise _bad(f"architecture: {where}.inputs must be names")
        nodes.append(Node(_req(n, "name", str, where), _req(n, "op", str, where), inputs,
                          _req(n, "attrs", dict, where)))
    meta = g.get("meta", {})
    return ModelGraph(tuple(in_shape), nodes, {}, meta if isinstance(meta, dict) else {})


def _checked(fn: Callable[[], Any]) -> Any:
    """Run a graph check; any error other than PotlutFormatError becomes one."""
    try:
        return fn()
    except PotlutFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise _bad(f"invalid model graph ({type(exc).__name__}: {exc})") from None


def decode(data: bytes) -> tuple[ModelGraph, FileInfo]:
    """Parse a complete file; :class:`PotlutFormatError` on any defect."""
    body_size, payload_size, dict_size, version = _parse_header(data)
    body = _decompress(data[HEADER_SIZE:], body_size, dict_size)
    sections = _split_sections(body)
    arch = _parse_arch(sections[b"ARCH"])
    if version >= 4:
        archjson.expand(arch.get("graph"))
    graph = _graph_from_arch(arch)
    table = _checked(lambda: slots(graph, required_arrays(graph)))
    entries = _read_table(sections[b"ARRS"], table, len(sections[b"DATA"]), version)
    graph.arrays = _decode_arrays(entries, table, sections[b"DATA"])
    _checked(graph.validate)
    coders = {e.encoding for e in entries if e.encoding in CODERS}
    info = FileInfo(version, len(data), payload_size, body_size, len(sections[b"ARCH"]),
                    dict_size, ",".join(sorted(coders)) or "none", entries, sections[b"DATA"],
                    len(sections[b"ARRS"]))
    return graph, info


def read(path: str | Path) -> tuple[ModelGraph, FileInfo]:
    """Load a .potlut file with its :class:`FileInfo`."""
    path = Path(path)
    if not path.is_file():
        raise PotlutFormatError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PotlutFormatError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return decode(data)
    except PotlutFormatError as exc:
        raise PotlutFormatError(f"{path}: {exc}") from None


def load(path: str | Path) -> ModelGraph:
    """Load the :class:`ModelGraph` stored in a .potlut file."""
    return read(path)[0]
