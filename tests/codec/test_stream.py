"""The .rnnc stream: header and chunk checks, truncation to a prefix."""

from __future__ import annotations

import struct
import zlib

import pytest

from potlut.codec.stream import StreamHeader, read_stream, truncate, write_stream
from potlut.errors import PotlutFormatError

HEAD = StreamHeader(width=40, height=20, iterations=3, bits=8, model_width=16,
                    model_iterations=4, prime_steps=1, diffuse_steps=1,
                    fingerprint=b"12345678")
CHUNKS = [b"\x01" * 200, b"\x02" * 3, b"", b"\x04" * 130]


def _stream():
    return write_stream(HEAD, CHUNKS[0], CHUNKS[1:])


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip_and_size():
    data = _stream()
    head, counts, chunks = read_stream(data)
    assert head == HEAD and counts == CHUNKS[0] and chunks == CHUNKS[1:]
    # 24-byte header, 2 + 1 + 1 + 2 length bytes, the chunks, the CRC-32
    assert len(data) == 24 + 6 + sum(map(len, CHUNKS)) + 4


def test_truncate_keeps_a_prefix():
    short = truncate(_stream(), 2)
    head, counts, chunks = read_stream(short)
    assert head.iterations == 2 and counts == CHUNKS[0] and chunks == CHUNKS[1:3]
    assert short[5:].startswith(_stream()[5:9])  # width, height unchanged
    assert len(short) == len(_stream()) - 2 - 130
    with pytest.raises(PotlutFormatError, match="cannot keep 4 iterations"):
        truncate(_stream(), 4)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: b"PNG!" + d[4:], "bad magic"),
    (lambda d: d[:10], "shorter than its header"),
    (lambda d: _recrc(d[:4] + b"\x07" + d[5:-4]), "format version 7"),
    (lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:], "CRC-32 mismatch"),
    (lambda d: d[:-1], "CRC-32 mismatch"),
    (lambda d: _recrc(d[:-4] + b"\0"), "1 bytes after the last chunk"),
    (lambda d: _recrc(d[:-4 - 100]), "a chunk of 130 bytes, 30 left"),
    (lambda d: _recrc(d[:-4 - 131]), "inside a chunk length"),
    (lambda d: _recrc(d[:5] + b"\0\0" + d[7:-4]), "image size 0x20"),
    (lambda d: _recrc(d[:9] + b"\x05" + d[10:-4]), "declares 5 iterations"),
])
def test_malformed_streams_are_rejected(edit, message):
    with pytest.raises(PotlutFormatError, match=message):
        read_stream(edit(_stream()))
