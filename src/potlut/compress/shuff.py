"""S-Huff: canonical Huffman over magnitude codes plus a separate packed sign stream.

Stage 1's second half (METHODS §3). The magnitude codes (zero included) get a canonical
Huffman code whose lengths alone are stored (at most :data:`MAX_LEN` bits, limited with
the JPEG ``Adjust_BITS`` procedure); the sign bits of non-zero weights follow as their
own packed stream. Encoding is vectorized with numpy; decoding is a numba-compiled
bit-serial canonical decoder whose only allocation is its output (a crafted stream
cannot make it allocate more than the declared weight count).

Blob layout (documented in docs/format.md): the code-length table (u8 bits per length
``w``, u32 number of listed codes ``m``, then ``m`` lengths of ``w`` bits each, MSB first,
zero padded: codes from ``m`` on are unused), the code stream (MSB first, zero padded to
a byte; its length follows from decoding the declared number of weights), the sign
stream (MSB first, zero padded).
"""

from __future__ import annotations

import heapq
import math
import struct

import numba
import numpy as np

from potlut.compress.sharing import SharedWeights, code_counts, pack_signs, with_signs
from potlut.errors import PotlutFormatError

MAX_LEN = 24  # longest code; a 24-bit window plus 7 bits of offset fits in 32 bits


def code_lengths(counts: np.ndarray, max_len: int = MAX_LEN) -> np.ndarray:
    """Huffman code length of every symbol (0 for unused symbols), limited to ``max_len``.

    One used symbol gets length 1 (a code must spend at least one bit per symbol so the
    decoder can bound its work by the stream size). Ties are broken by symbol index, so
    the result is deterministic.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts)
    lengths = np.zeros(n, dtype=np.uint8)
    used = np.flatnonzero(counts > 0)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    if len(used) > 1 << max_len:
        raise ValueError(f"{len(used)} symbols do not fit codes of at most {max_len} bits")
    heap = [(int(counts[s]), i, [int(s)]) for i, s in enumerate(used)]
    heapq.heapify(heap)
    depth = np.zeros(n, dtype=np.int64)
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        merged = s1 + s2
        depth[merged] += 1
        heapq.heappush(heap, (c1 + c2, tie, merged))
        tie += 1
    if depth.max() <= max_len:
        return depth.astype(np.uint8)
    return _limit_lengths(counts, depth, max_len)


def _limit_lengths(counts: np.ndarray, depth: np.ndarray, max_len: int) -> np.ndarray:
    """Reshape the length histogram to ``max_len`` (JPEG Annex K.3), keep Kraft equality."""
    top = int(depth.max())
    bl = np.bincount(depth[depth > 0], minlength=top + 1).astype(np.int64)
    for i in range(top, max_len, -1):
        while bl[i] > 0:
            j = i - 2
            while bl[j] == 0:
                j -= 1
            bl[i] -= 2
            bl[i - 1] += 1
            bl[j + 1] += 2
            bl[j] -= 1
    used = np.flatnonzero(counts > 0)
    order = used[np.lexsort((used, -counts[used]))]  # most frequent first
    lens = np.repeat(np.arange(len(bl)), bl)[: len(order)]
    out = np.zeros(len(counts), dtype=np.uint8)
    out[order] = lens
    return out


def _check_lengths(lengths: np.ndarray) -> None:
    if lengths.size and int(lengths.max()) > MAX_LEN:
        raise PotlutFormatError(f"Huffman code length {int(lengths.max())} exceeds {MAX_LEN}")
    nz = lengths[lengths > 0].astype(np.int64)
    if int((1 << (MAX_LEN - nz)).sum()) > 1 << MAX_LEN:
        raise PotlutFormatError("Huffman code lengths violate the Kraft inequality")


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code of every symbol (DEFLATE order: by length, then by symbol)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.uint32)
    if not lengths.any():
        return codes
    bl = np.bincount(lengths, minlength=int(lengths.max()) + 1)
    bl[0] = 0
    code, next_code = 0, {}
    for b in range(1, len(bl)):
        code = (code + int(bl[b - 1])) << 1
        next_code[b] = code
    for s in np.flatnonzero(lengths):
        b = int(lengths[s])
        codes[s] = next_code[b]
        next_code[b] += 1
    return codes


def encode_symbols(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Huffman-code ``symbols`` (flat ints); returns ``(stream bytes, bit count)``."""
    symbols = np.asarray(symbols).reshape(-1)
    codes = canonical_codes(lengths).astype(np.int64)
    lens = np.asarray(lengths, dtype=np.int64)
    chunks, total = [], 0
    step = 1 << 18
    for i in range(0, symbols.size, step):
        s = symbols[i : i + step].astype(np.int64)
        if (lens[s] == 0).any():
            raise ValueError("a symbol to encode has no code (count it before building lengths)")
        ln, cd = lens[s], codes[s]
        starts = np.cumsum(ln) - ln
        owner = np.repeat(np.arange(s.size), ln)
        j = np.arange(int(ln.sum())) - starts[owner]
        chunks.append(((cd[owner] >> (ln[owner] - 1 - j)) & 1).astype(np.uint8))
        total += int(ln.sum())
    bits = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return np.packbits(bits).tobytes(), total


@numba.njit(cache=True)
def _decode(buf, nbits, count, first, limit, offsets, order, out):  # pragma: no cover
    """Bit-serial canonical decoding of ``count`` symbols into ``out``; returns the bits
    read, or -1 (stream ends early) / -2 (a bit pattern that is no code)."""
    pos = 0
    maxl = first.size - 1
    for i in range(count):
        code = 0
        length = 0
        while True:
            if pos >= nbits:
                return -1
            code = (code << 1) | ((buf[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
            length += 1
            if code < limit[length]:
                out[i] = order[offsets[length] + code - first[length]]
                break
            if length == maxl:
                return -2
    return pos


_ERRORS = {
    -1: "code stream ends before the declared number of weights",
    -2: "code stream holds a bit pattern that is no code",
}


def _decode_prefix(data: bytes, lengths: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """Decode ``count`` symbols from the start of ``data``; return them and the bits read.

    Memory: the uint16 output only; time: at most ``8 * len(data)`` bit steps.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    _check_lengths(lengths)
    if len(lengths) > 1 << 16:
        raise PotlutFormatError(f"{len(lengths)} codes exceed the 65536 a layer may use")
    if count == 0:
        return np.zeros(0, np.uint16), 0
    if count > 8 * len(data):  # every code is at least one bit long
        raise PotlutFormatError(f"{count} symbols cannot fit in {8 * len(data)} bits")
    used = np.flatnonzero(lengths)
    if len(used) == 0:
        raise PotlutFormatError("code stream present but no symbol has a code")
    buf = np.frombuffer(data, dtype=np.uint8)
    maxl = int(lengths.max())
    bl = np.bincount(lengths[used], minlength=maxl + 1)
    first = np.zeros(maxl + 1, np.int64)  # first canonical code of each length (count[0] = 0)
    for b in range(2, maxl + 1):
        first[b] = (first[b - 1] + bl[b - 1]) << 1
    limit = first + bl  # codes of length b are first[b] .. limit[b] - 1
    limit[0] = 0
    offsets = np.concatenate([[0], np.cumsum(bl)[:-1]])  # symbols with length < b
    order = used[np.lexsort((used, lengths[used]))]  # canonical order
    out = np.empty(count, np.uint16)
    pos = _decode(buf, 8 * len(data), count, first, limit, offsets, order.astype(np.int64), out)
    if pos < 0:
        raise PotlutFormatError(_ERRORS[pos])
    if pos % 8 and int(buf[pos // 8]) & ((1 << (8 - pos % 8)) - 1):
        raise PotlutFormatError("non-zero padding after the code stream")
    return out, int(pos)


def decode_symbols(data: bytes, nbits: int, lengths: np.ndarray, count: int) -> np.ndarray:
    """Decode exactly ``count`` symbols that fill exactly ``nbits`` bits of ``data``.

    Anything else (a code that does not exist, a stream that ends early or has bits
    left over, non-zero padding) is a :class:`PotlutFormatError`.
    """
    if len(data) != (nbits + 7) // 8:
        raise PotlutFormatError(f"code stream is {len(data)} bytes, {nbits} bits declared")
    if count == 0 and nbits:
        raise PotlutFormatError("code stream has bits but no symbols")
    out, pos = _decode_prefix(data, lengths, count)
    if pos != nbits:
        raise PotlutFormatError("code stream has bits left over after the declared number "
                                "of weights")
    return out


TABLE = struct.Struct("<BI")  # bits per code length, number of listed codes
TRUNCATED = 0x80  # ``w`` of a table that lists no lengths: the truncated binary code of m


def truncated_binary(m: int, n_codes: int) -> np.ndarray:
    """Code lengths of the truncated binary code of codes ``0 .. m-1`` (m >= 2): with
    ``L = bit_length(m - 1)``, the first ``2^L - m`` codes take ``L - 1`` bits, the rest
    ``L`` (a complete code; ``L`` bits each when m is a power of two)."""
    big = (m - 1).bit_length()
    lengths = np.zeros(n_codes, np.int64)
    lengths[:m] = big
    lengths[: (1 << big) - m] = big - 1
    return lengths


def encode_table(lengths: np.ndarray) -> bytes:
    """The code-length table: ``w``, ``m``, then ``lengths[:m]`` in ``w`` bits each.

    ``m`` is one past the last used code and ``w`` the bit length of the longest code, so
    a 4-bit layer's table is 8 bytes instead of 16 and unused top codes cost nothing.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    used = np.flatnonzero(lengths)
    m = int(used[-1]) + 1 if used.size else 0
    w = int(lengths.max()).bit_length() if used.size else 0
    bits = (lengths[:m, None] >> np.arange(w - 1, -1, -1)) & 1
    return TABLE.pack(w, m) + np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()


def decode_table(blob: bytes, n_codes: int) -> tuple[np.ndarray, int]:
    """``(lengths [n_codes], bytes the table takes)`` from the start of an S-Huff blob."""
    if len(blob) < TABLE.size:
        raise PotlutFormatError("S-Huff blob shorter than its code-length table")
    w, m = TABLE.unpack_from(blob)
    if w == TRUNCATED:
        if not 2 <= m <= n_codes:
            raise PotlutFormatError(f"S-Huff truncated binary code of {m} codes does not fit "
                                    f"2..{n_codes}")
        return truncated_binary(m, n_codes), TABLE.size
    size = TABLE.size + (m * w + 7) // 8
    if w > MAX_LEN.bit_length() or m > n_codes or size > len(blob):
        raise PotlutFormatError(f"S-Huff code-length table ({m} codes of {w} bits) does not "
                                f"fit {n_codes} codes or the blob")
    bits = np.unpackbits(np.frombuffer(blob, np.uint8, size - TABLE.size, TABLE.size))
    if bits[m * w :].any():
        raise PotlutFormatError("non-zero padding after the code-length table")
    lengths = np.zeros(n_codes, np.int64)
    if m and w:
        weights = 1 << np.arange(w - 1, -1, -1)
        lengths[:m] = bits[: m * w].reshape(m, w).astype(np.int64) @ weights
    if m and lengths[m - 1] == 0:
        raise PotlutFormatError("S-Huff code-length table lists an unused last code")
    return lengths, size


def side_bytes(blob: bytes, n_codes: int) -> int:
    """Bytes of side information at the start of a blob: the code-length table."""
    return decode_table(blob, n_codes)[1]


def encode_weights(sw: SharedWeights, truncated: bool = True) -> bytes:
    """S-Huff blob of one layer: code-length table, code stream, sign stream.

    The table is the Huffman code's lengths, or, where that is fewer bytes in all (small
    layers over many codes, e.g. the 8-bit ends: the table outweighs what Huffman saves),
    the 5-byte truncated binary code of codes ``0 .. max used`` (format v4; not with
    ``truncated=False``, for files of older versions).
    """
    codes = sw.codes.reshape(-1)
    counts = code_counts(codes, sw.n_codes)
    lengths = code_lengths(counts)
    table = encode_table(lengths)
    m = int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 0
    if m >= 2 and truncated:
        flat = truncated_binary(m, sw.n_codes)
        cost = lambda ln: -(-int(counts @ ln) // 8)  # noqa: E731  (stream bytes)
        if TABLE.size + cost(flat) < len(table) + cost(lengths):
            lengths, table = flat, TABLE.pack(TRUNCATED, m)
    stream, _ = encode_symbols(codes, lengths)
    return table + stream + pack_signs(sw)


def split_blob(blob: bytes, count: int, n_codes: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(lengths, symbols, code stream start, bits)`` of an S-Huff blob of ``count``
    weights: the stream is ``blob[start : start + ceil(bits / 8)]``, the signs follow."""
    lengths, head = decode_table(blob, n_codes)
    symbols, nbits = _decode_prefix(blob[head:], lengths, count)
    return lengths, symbols, head, nbits


def decode_weights(blob: bytes, shape: tuple[int, ...], codebook: np.ndarray) -> SharedWeights:
    """Inverse of :func:`encode_weights` for a tensor of ``shape`` over ``codebook``."""
    _, symbols, head, nbits = split_blob(blob, math.prod(shape), len(codebook))
    return with_signs(symbols, blob[head + (nbits + 7) // 8 :], shape, codebook)
