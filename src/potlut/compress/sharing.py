"""Weight sharing: a layer is a codebook plus one magnitude code and a sign per weight.

This is stage 1's first half (METHODS §3): after QAT every weight is one of
``n_codes`` shared magnitudes, so a layer is stored as its codebook and an integer code
per weight. :func:`pack_raw` is the plain ``b``-bit packing (sign bit + ``b-1``
magnitude bits per weight) that the entropy coders are measured against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from potlut.errors import PotlutFormatError

_CHUNK = 1 << 17  # weights per step of unpack_raw (x8)


@dataclass
class SharedWeights:
    """One layer's quantized weight: ``value = (negative ? -1 : 1) * codebook[codes]``."""

    codes: np.ndarray  # unsigned ints, any shape
    negative: np.ndarray  # bool, same shape; false where the value is zero
    codebook: np.ndarray  # float64 [n_codes]

    @property
    def n_codes(self) -> int:
        return int(len(self.codebook))

    def zero_codes(self) -> np.ndarray:
        """Bool mask over codes: True where the code stands for the value 0."""
        return np.asarray(self.codebook) == 0

    def nonzero(self) -> np.ndarray:
        """Bool mask over weights: True where the weight carries a sign bit."""
        return lookup(~self.zero_codes(), self.codes)

    def values(self) -> np.ndarray:
        """The real weights as float32 (exact: the codebook holds float32-exact values)."""
        mags = np.asarray(self.codebook)[self.codes.astype(np.int64)]
        return np.where(self.negative, -mags, mags).astype(np.float32)


def lookup(table: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``table[codes]`` in chunks: no int64 copy of a whole layer's codes (memory bound)."""
    flat = codes.reshape(-1)
    out = np.empty(flat.size, table.dtype)
    for lo in range(0, flat.size, _CHUNK):
        out[lo : lo + _CHUNK] = table[flat[lo : lo + _CHUNK]]
    return out.reshape(codes.shape)


def code_counts(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """How often each of ``n_codes`` codes occurs (int64), counted in chunks."""
    flat = codes.reshape(-1)
    counts = np.zeros(n_codes, np.int64)
    for lo in range(0, flat.size, _CHUNK):
        counts += np.bincount(flat[lo : lo + _CHUNK], minlength=n_codes)[:n_codes]
    return counts


def pack_signs(sw: SharedWeights) -> bytes:
    """The sign stream of the entropy coders: one bit per non-zero weight, MSB first."""
    return np.packbits(sw.negative.reshape(-1)[sw.nonzero().reshape(-1)]).tobytes()


def with_signs(
    symbols: np.ndarray, sign_bytes: bytes, shape: tuple[int, ...], codebook: np.ndarray
) -> SharedWeights:
    """Decoded codes plus their sign stream -> :class:`SharedWeights` (length, padding checked)."""
    n_codes = len(codebook)
    dtype = np.uint8 if n_codes <= 256 else np.uint16
    codes = symbols.astype(dtype, copy=False).reshape(shape)
    nonzero = lookup(~(np.asarray(codebook) == 0), symbols.reshape(-1))
    nnz = int(nonzero.sum())
    if len(sign_bytes) != (nnz + 7) // 8:
        raise PotlutFormatError(
            f"sign stream is {len(sign_bytes)} bytes, {nnz} non-zero weights need {(nnz + 7) // 8}"
        )
    sb = np.frombuffer(sign_bytes, dtype=np.uint8)
    if nnz % 8 and int(sb[-1]) & ((1 << (8 - nnz % 8)) - 1):
        raise PotlutFormatError("non-zero padding after the sign stream")
    negative = np.zeros(symbols.size, dtype=bool)
    negative[nonzero] = np.unpackbits(sb, count=nnz).astype(bool)
    return SharedWeights(codes, negative.reshape(shape), np.asarray(codebook))


def bits_per_code(n_codes: int) -> int:
    """Magnitude bits needed for ``n_codes`` codes (0 for a single code)."""
    return int(max(n_codes - 1, 0)).bit_length()


def pack_raw(codes: np.ndarray, negative: np.ndarray, n_codes: int) -> bytes:
    """Plain packing: per weight a sign bit then the magnitude code, MSB first.

    With IOS-PoT ``n_codes = 2^(b-1)`` this is exactly ``b`` bits per weight, the
    baseline every entropy coder is compared with.
    """
    k = bits_per_code(n_codes)
    flat_c, flat_n = codes.reshape(-1), negative.reshape(-1)
    shifts = np.arange(k, -1, -1, dtype=np.uint32)
    parts = []
    step = _CHUNK * 8  # a multiple of 8 weights ends on a byte boundary
    for lo in range(0, flat_c.size, step):
        c = flat_c[lo : lo + step].astype(np.uint32)
        words = (flat_n[lo : lo + step].astype(np.uint32) << k) | c
        bits = ((words[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
        parts.append(np.packbits(bits.reshape(-1)).tobytes())
    return b"".join(parts)


def unpack_raw(data: bytes, count: int, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_raw`: ``(codes, negative)`` of ``count`` weights.

    Works in chunks of :data:`_CHUNK` weights, so temporaries stay small whatever ``k``.
    """
    k = bits_per_code(n_codes)
    need = (count * (k + 1) + 7) // 8
    if len(data) != need:
        raise PotlutFormatError(f"raw weight stream is {len(data)} bytes, expected {need}")
    buf = np.frombuffer(data, np.uint8)
    if (count * (k + 1)) % 8 and int(buf[-1]) & ((1 << (8 - count * (k + 1) % 8)) - 1):
        raise PotlutFormatError("non-zero padding after the raw weight stream")
    dtype = np.uint8 if n_codes <= 256 else np.uint16
    codes = np.empty(count, dtype)
    negative = np.empty(count, bool)
    step = _CHUNK * 8  # a multiple of 8 weights starts on a byte boundary
    for lo in range(0, count, step):
        n = min(step, count - lo)
        start = lo * (k + 1) // 8
        bits = np.unpackbits(buf[start : start + (n * (k + 1) + 7) // 8], count=n * (k + 1))
        bits = bits.reshape(n, k + 1)
        c = np.zeros(n, np.uint32)
        for j in range(1, k + 1):
            c = (c << 1) | bits[:, j]
        if n and int(c.max()) >= n_codes:
            raise PotlutFormatError(f"raw weight code {int(c.max())} outside codebook of "
                                    f"{n_codes}")
        codes[lo : lo + n] = c
        negative[lo : lo + n] = bits[:, 0].astype(bool)
    return codes, negative


def raw_bytes(count: int, bits: int) -> int:
    """Size of ``count`` weights packed at ``bits`` bits each."""
    return (count * bits + 7) // 8
