"""The .rnnc stream: header, per-tile iteration counts, one entropy-coded chunk per iteration.

Layout (little-endian): magic ``RNNC``, u8 version, u16 width, u16 height, u8 ``K``
(iterations in this stream), then the model it needs: u8 bits per tile, u16 width unit,
u8 trained iterations ``N`` (the largest count), u8 prime steps, u8 diffuse steps and an
8-byte weight fingerprint; then the tile-count chunk and ``K`` code chunks, each as a
LEB128 length and its bytes; last a CRC-32 of everything before it.

Progressive: the first ``k`` code chunks decode without the rest, and :func:`truncate`
turns a stream into its ``k``-iteration prefix (K = k, later chunks and counts above k
dropped by the decoder). Reading is untrusted-input safe: every length is checked
against what is left before anything is allocated, and every failure is one
:class:`PotlutFormatError` naming the problem.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace

from potlut.errors import PotlutFormatError

MAGIC = b"RNNC"
VERSION = 1
MAX_SIDE = 16384
_HEAD = struct.Struct("<4sBHHBBHBBB8s")


@dataclass(frozen=True)
class StreamHeader:
    """What a decoder needs before the chunks: image size, iterations, model identity."""

    width: int
    height: int
    iterations: int  # K: code chunks in this stream
    bits: int
    model_width: int
    model_iterations: int  # N: largest per-tile count
    prime_steps: int
    diffuse_steps: int
    fingerprint: bytes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise PotlutFormatError("truncated stream (inside a chunk length)")
        if shift > 28:
            raise PotlutFormatError("corrupt stream (chunk length too long)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def write_stream(head: StreamHeader, counts_chunk: bytes, chunks: list[bytes]) -> bytes:
    """Serialize a stream; ``len(chunks)`` must equal ``head.iterations``."""
    if len(chunks) != head.iterations:
        raise ValueError(f"{len(chunks)} chunks for a header of {head.iterations} iterations")
    body = bytearray(_HEAD.pack(MAGIC, VERSION, head.width, head.height, head.iterations,
                                head.bits, head.model_width, head.model_iterations,
                                head.prime_steps, head.diffuse_steps, head.fingerprint))
    for chunk in [counts_chunk, *chunks]:
        body += _varint(len(chunk)) + chunk
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def read_stream(data: bytes) -> tuple[StreamHeader, bytes, list[bytes]]:
    """Parse and check a stream: header, tile-count chunk, code chunks."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise PotlutFormatError("not an .rnnc stream (bad magic)")
    if len(data) < _HEAD.size + 4:
        raise PotlutFormatError("truncated stream (shorter than its header)")
    fields = _HEAD.unpack_from(data)
    if fields[1] != VERSION:
        raise PotlutFormatError(f"stream format version {fields[1]} is not supported "
                                f"(this potlut reads version {VERSION})")
    end = len(data) - 4
    if zlib.crc32(data[:end]) != struct.unpack_from("<I", data, end)[0]:
        raise PotlutFormatError("corrupt or truncated stream (CRC-32 mismatch)")
    head = StreamHeader(*fields[2:])
    if not (0 < head.width <= MAX_SIDE and 0 < head.height <= MAX_SIDE):
        raise PotlutFormatError(f"image size {head.width}x{head.height} outside 1..{MAX_SIDE}")
    if not (1 <= head.iterations <= head.model_iterations) or head.bits == 0:
        raise PotlutFormatError(f"stream declares {head.iterations} iterations of a "
                                f"{head.model_iterations}-iteration model with {head.bits} bits")
    pos, chunks = _HEAD.size, []
    for _ in range(head.iterations + 1):
        n, pos = _read_varint(data, pos, end)
        if n > end - pos:
            raise PotlutFormatError(f"truncated stream (a chunk of {n} bytes, "
                                    f"{end - pos} left)")
        chunks.append(data[pos:pos + n])
        pos += n
    if pos != end:
        raise PotlutFormatError(f"corrupt stream ({end - pos} bytes after the last chunk)")
    return head, chunks[0], chunks[1:]


def truncate(data: bytes, iterations: int) -> bytes:
    """The stream of the first ``iterations`` iterations (progressive decoding's prefix)."""
    head, counts_chunk, chunks = read_stream(data)
    if not 1 <= iterations <= head.iterations:
        raise PotlutFormatError(f"cannot keep {iterations} iterations of a stream of "
                                f"{head.iterations}")
    return write_stream(replace(head, iterations=iterations), counts_chunk, chunks[:iterations])
