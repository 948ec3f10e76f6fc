"""Weight streams of the generated C: codes packed at their bit-width, or S-Huff.

Both streams hold one layer's weights in C order ``[O][Cg][kh][kw]``, so the generated
code decodes output channel ``o``'s ``K`` weights into a ``K``-byte row just before it
needs them: the weights stay in flash in their compressed form and RAM holds one row.

- ``packed``: per weight the sign bit then ``k`` code bits (the program's signed code
  ``negative << k | code``), MSB first: exactly ``b`` bits per IOS-PoT weight.
- ``shuff``: the paper's S-Huff (METHODS §3): canonical Huffman codes of the magnitude
  codes, then a separate stream of sign bits for weights whose value is not zero. The C
  decoder walks the canonical code one bit at a time (counts per length, symbols sorted
  by length), as in zlib's ``puff``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from potlut.compress.shuff import code_lengths, encode_symbols
from potlut.infer.plut import _code_bits
from potlut.infer.program import Layer


def pack_msb(words: np.ndarray, width: int) -> bytes:
    """``words`` (non-negative ints) as ``width``-bit fields, MSB first, zero padded."""
    w = np.asarray(words, dtype=np.int64).reshape(-1)
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    bits = ((w[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1)).tobytes()


def signed_codes(st: Layer) -> np.ndarray:
    """``negative << k | code`` of every weight (int64, C order)."""
    kb = _code_bits(st.w_values.size)
    return (st.w_negative.astype(np.int64) << kb | st.w_codes.astype(np.int64)).reshape(-1)


def packed_stream(st: Layer) -> tuple[bytes, int]:
    """``(bytes, bits per weight)`` of the packed weight stream of one layer."""
    width = _code_bits(st.w_values.size) + 1
    return pack_msb(signed_codes(st), width), width


@dataclass
class ShuffStream:
    """One layer's S-Huff stream as the C decoder reads it."""

    codes: bytes  # canonical Huffman code stream, MSB first
    signs: bytes  # sign bits of non-zero weights, MSB first
    count: list[int]  # count[len] codes of each length, len = 0 .. max_len
    symbols: list[int]  # symbols in canonical order (by length, then symbol)
    nbits: int

    @property
    def nbytes(self) -> int:
        """Flash bytes: both streams plus the decoding tables (one byte per entry)."""
        return len(self.codes) + len(self.signs) + len(self.count) + len(self.symbols)


def shuff_stream(st: Layer) -> ShuffStream:
    """S-Huff stream of one layer's weights (same code lengths as the .potlut writer)."""
    codes = st.w_codes.reshape(-1).astype(np.int64)
    n = st.w_values.size
    lengths = code_lengths(np.bincount(codes, minlength=n))
    stream, nbits = encode_symbols(codes, lengths)
    nonzero = st.w_values[codes] != 0
    signs = np.packbits(st.w_negative.reshape(-1)[nonzero].astype(np.uint8)).tobytes()
    max_len = int(lengths.max(initial=0))
    count = [int((lengths == i).sum()) if i else 0 for i in range(max_len + 1)]
    order = sorted((int(lengths[s]), s) for s in range(n) if lengths[s])
    return ShuffStream(stream, signs, count, [s for _, s in order], nbits)
