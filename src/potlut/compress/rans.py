"""rANS: an optional weight coder that gets closer to the entropy bound than S-Huff.

Huffman spends a whole number of bits per weight, so a layer whose most frequent code
has probability 0.4 pays up to a few percent above the order-0 bound. A static-model
range ANS (Duda's rANS, 32-bit state, byte-wise renormalization, as in ryg_rans) codes
each weight in ``log2(M / freq)`` bits with ``M = 2^scale_bits``, so only the frequency
quantization and the 4-byte final state separate it from the bound. S-Huff stays the
default because it is what the hardware decodes; ``rans`` is selected per file
(``potlut compress --coder rans``).

Blob layout (documented in docs/format.md): u8 ``scale_bits``, u16 little-endian
frequency per code (0 = unused; they sum to ``2^scale_bits``), u32 byte length of the
rANS stream, the rANS stream, then the sign stream exactly as in S-Huff.

The two per-symbol loops are numba-compiled; the decoder returns an error code instead
of raising, so every malformed blob becomes a :class:`PotlutFormatError` and no loop runs
longer than the declared weight count.
"""

from __future__ import annotations

import math
import struct

import numba
import numpy as np

from potlut.compress.sharing import SharedWeights, code_counts, pack_signs, with_signs
from potlut.errors import PotlutFormatError

RANS_L = 1 << 23  # lower bound of the normalized state: x in [L, 256 L)
MIN_SCALE, MAX_SCALE = 12, 16
MAX_WEIGHTS = 1 << 28  # per layer; larger declared shapes are rejected before allocating
_HEAD = struct.Struct("<B")
_LEN = struct.Struct("<I")


def side_bytes(n_codes: int) -> int:
    """Bytes of side information: scale, frequency table, stream length."""
    return 1 + 2 * n_codes + 4


def scale_bits_for(n_used: int) -> int:
    """``log2 M``: 12 bits, more only when many codes are used (each needs freq >= 1)."""
    return min(MAX_SCALE, max(MIN_SCALE, int(max(n_used - 1, 0)).bit_length() + 1))


def quantize_freqs(counts: np.ndarray, scale_bits: int) -> np.ndarray:
    """Frequencies summing to ``2^scale_bits``, >= 1 for every used code, 0 otherwise.

    Start from the floor of the scaled counts (at least 1), then hand out (or take back)
    one unit at a time where it costs the fewest coded bits, so the table is close to the
    best integer approximation of the empirical distribution.
    """
    counts = np.asarray(counts, dtype=np.int64)
    freqs = np.zeros(len(counts), np.int64)
    used = counts > 0
    total = int(counts.sum())
    if total == 0:
        return freqs
    m = 1 << scale_bits
    if int(used.sum()) > m:
        raise ValueError(f"{int(used.sum())} used codes do not fit {scale_bits}-bit frequencies")
    c = counts.astype(np.float64)
    freqs[used] = np.maximum(1, (counts[used] * m) // total)
    while (diff := m - int(freqs.sum())) != 0:
        if diff > 0:  # one more unit for each of the codes where it saves the most bits
            score = np.where(used, -c * np.log2((freqs + 1) / np.maximum(freqs, 1)), np.inf)
        else:  # one unit less where it costs the fewest bits (never below 1)
            lost = np.log2(np.maximum(freqs, 2) / np.maximum(freqs - 1, 1))
            score = np.where(freqs > 1, c * lost, np.inf)
        k = min(abs(diff), int(np.isfinite(score).sum()))
        pick = np.argsort(score, kind="stable")[:k]
        freqs[pick] += 1 if diff > 0 else -1
    return freqs


@numba.njit(cache=True)
def _encode(symbols, freqs, starts, scale_bits):  # pragma: no cover - numba
    n = symbols.size
    cap = 3 * n + 8  # < 3 renormalization bytes per symbol at scale <= 16, + final state
    out = np.empty(cap, np.uint8)
    pos = cap
    x = np.uint64(RANS_L)
    for i in range(n - 1, -1, -1):
        s = symbols[i]
        f = np.uint64(freqs[s])
        x_max = np.uint64((RANS_L >> scale_bits) << 8) * f
        while x >= x_max:
            pos -= 1
            out[pos] = np.uint8(x & np.uint64(0xFF))
            x >>= np.uint64(8)
        x = ((x // f) << np.uint64(scale_bits)) + (x % f) + np.uint64(starts[s])
    for _ in range(4):  # final state, little-endian at the front
        pos -= 1
        out[pos] = np.uint8((x >> np.uint64(24)) & np.uint64(0xFF))
        x = (x << np.uint64(8)) & np.uint64(0xFFFFFFFF)
    return out[pos:].copy()


@numba.njit(cache=True)
def _decode(stream, count, freqs, starts, slot_sym, scale_bits, out):  # pragma: no cover
    """Fill ``out``; 0 on success, else an error code (see :data:`_ERRORS`)."""
    n = stream.size
    if n < 4:
        return 1
    x = (np.uint64(stream[0]) | (np.uint64(stream[1]) << np.uint64(8))
         | (np.uint64(stream[2]) << np.uint64(16)) | (np.uint64(stream[3]) << np.uint64(24)))
    if x < np.uint64(RANS_L) or x >= np.uint64(RANS_L) << np.uint64(8):
        return 2
    pos = 4
    mask = np.uint64((1 << scale_bits) - 1)
    for i in range(count):
        slot = x & mask
        s = slot_sym[slot]
        out[i] = s
        x = np.uint64(freqs[s]) * (x >> np.uint64(scale_bits)) + slot - np.uint64(starts[s])
        while x < np.uint64(RANS_L):
            if pos >= n:
                return 1
            x = (x << np.uint64(8)) | np.uint64(stream[pos])
            pos += 1
    if pos != n:
        return 3
    if x != np.uint64(RANS_L):
        return 4
    return 0


_ERRORS = {
    1: "rANS stream ends before the declared number of weights",
    2: "rANS initial state outside its range",
    3: "rANS stream has bytes left over after the declared number of weights",
    4: "rANS final state mismatch (corrupt stream)",
}


def encode_symbols(symbols: np.ndarray, freqs: np.ndarray, scale_bits: int) -> bytes:
    """rANS-code ``symbols`` (flat ints) with the quantized ``freqs``."""
    symbols = np.ascontiguousarray(np.asarray(symbols).reshape(-1))
    if symbols.dtype.kind not in "ui":
        symbols = symbols.astype(np.int64)
    if symbols.size == 0:
        return b""
    freqs = np.asarray(freqs, dtype=np.int64)
    if (freqs[code_counts(symbols, len(freqs)) > 0] == 0).any():
        raise ValueError("a symbol to encode has frequency 0")
    starts = np.concatenate([[0], np.cumsum(freqs)[:-1]]).astype(np.int64)
    return _encode(symbols, freqs, starts, scale_bits).tobytes()


def decode_symbols(stream: bytes, freqs: np.ndarray, scale_bits: int, count: int) -> np.ndarray:
    """Decode exactly ``count`` symbols that use exactly all of ``stream``."""
    freqs = np.asarray(freqs, dtype=np.int64)
    if not MIN_SCALE <= scale_bits <= MAX_SCALE:
        raise PotlutFormatError(f"rANS scale {scale_bits} bits outside {MIN_SCALE}..{MAX_SCALE}")
    if count > MAX_WEIGHTS:
        raise PotlutFormatError(f"layer of {count} weights exceeds the rANS limit {MAX_WEIGHTS}")
    total = int(freqs.sum())
    if count == 0:
        if total or stream:
            raise PotlutFormatError("rANS frequencies or stream present for an empty layer")
        return np.zeros(0, np.uint16)
    m = 1 << scale_bits
    if total != m:
        raise PotlutFormatError(f"rANS frequencies sum to {total}, not {m}")
    # Every weight costs at least log2(M / max freq) bits: a small stream cannot declare
    # a huge layer (unless one code takes all of M, which costs nothing and is cheap).
    fmax = int(freqs.max())
    if fmax < m and count * math.log2(m / fmax) > 8 * len(stream) + 32:
        raise PotlutFormatError(f"{count} weights cannot fit in a {len(stream)}-byte rANS stream")
    starts = np.concatenate([[0], np.cumsum(freqs)[:-1]]).astype(np.int64)
    slot_sym = np.repeat(np.arange(len(freqs), dtype=np.int64), freqs)
    out = np.empty(count, np.uint16)  # codes < 65536: 2 bytes per weight
    err = _decode(np.frombuffer(stream, np.uint8), count, freqs, starts, slot_sym,
                  scale_bits, out)
    if err:
        raise PotlutFormatError(_ERRORS[err])
    return out


def encode_weights(sw: SharedWeights) -> bytes:
    """rANS blob of one layer: scale, frequencies, stream length, stream, signs."""
    codes = sw.codes.reshape(-1)
    counts = code_counts(codes, sw.n_codes)
    scale = scale_bits_for(int((counts > 0).sum()))
    freqs = quantize_freqs(counts, scale)
    stream = encode_symbols(codes, freqs, scale)
    signs = pack_signs(sw)
    return (_HEAD.pack(scale) + freqs.astype("<u2").tobytes() + _LEN.pack(len(stream))
            + stream + signs)


def decode_weights(blob: bytes, shape: tuple[int, ...], codebook: np.ndarray) -> SharedWeights:
    """Inverse of :func:`encode_weights` for a tensor of ``shape`` over ``codebook``."""
    n_codes = len(codebook)
    count = math.prod(shape)
    if n_codes > 1 << 16:
        raise PotlutFormatError(f"{n_codes} codes exceed the 65536 a layer may use")
    head = side_bytes(n_codes)
    if len(blob) < head:
        raise PotlutFormatError("rANS blob shorter than its header")
    (scale,) = _HEAD.unpack_from(blob, 0)
    freqs = np.frombuffer(blob, dtype="<u2", count=n_codes, offset=1).astype(np.int64)
    (nstream,) = _LEN.unpack_from(blob, 1 + 2 * n_codes)
    if nstream > len(blob) - head:
        raise PotlutFormatError(f"rANS stream declares {nstream} bytes, blob too short")
    symbols = decode_symbols(blob[head : head + nstream], freqs, scale, count)
    return with_signs(symbols, blob[head + nstream :], shape, codebook)
