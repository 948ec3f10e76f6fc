"""The .potlut container: round trip, and every kind of damaged file is a PotlutFormatError."""

from __future__ import annotations

import hashlib
import lzma
import os
import struct
import zlib

import numpy as np
import pytest
import torch

from potlut.compress import container
from potlut.compress.container import HEADER, HEADER_SIZE, MAGIC, decode, encode, load, save
from potlut.compress.graph import ModelGraph
from potlut.errors import PotlutFormatError
from potlut.models.small_cnn import SmallCNN
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.export import export_graph


def tiny_graph(seed: int = 0) -> ModelGraph:
    """A 458-weight SmallCNN (width 2): 8-bit ends, two 4-bit IOS-PoT middle layers."""
    torch.manual_seed(seed)
    q = convert(SmallCNN(10, 1, width=2), QuantSpec(bits=4))
    calibrate(q, torch.randn(32, 1, 8, 8))
    return export_graph(q, (1, 8, 8))


@pytest.fixture(scope="module")
def small() -> tuple[ModelGraph, bytes]:
    g = tiny_graph()
    return g, encode(g)[0]


def assert_same_graph(a: ModelGraph, b: ModelGraph) -> None:
    assert a.architecture() == b.architecture()
    assert sorted(a.arrays) == sorted(b.arrays)
    for k, v in a.arrays.items():
        assert v.dtype == b.arrays[k].dtype and v.shape == b.arrays[k].shape, k
        np.testing.assert_array_equal(v, b.arrays[k], err_msg=k)


def test_round_trip_is_exact(small, tmp_path) -> None:
    g, data = small
    assert data[:8] == MAGIC and len(data) < 2500
    info = save(g, tmp_path / "m.potlut")
    assert info.file_bytes == len(data) == (tmp_path / "m.potlut").stat().st_size
    assert_same_graph(g, load(tmp_path / "m.potlut"))
    assert encode(g)[0] == data  # deterministic bytes


def test_every_truncation_is_rejected(small) -> None:
    _, data = small
    for n in range(len(data)):
        with pytest.raises(PotlutFormatError):
            decode(data[:n])


def test_random_bit_flips_are_rejected(small) -> None:
    g, data = small
    rng = np.random.default_rng(0)
    rejected = 0
    for pos in rng.integers(0, len(data) * 8, 3000):
        bad = bytearray(data)
        bad[pos // 8] ^= 1 << (pos % 8)
        try:
            back, _ = decode(bytes(bad))
        except PotlutFormatError:
            rejected += 1
        else:  # a flip the format does not cover would have to leave the model unchanged
            assert_same_graph(g, back)
    assert rejected == 3000  # header CRC and payload SHA-256 cover every byte


def _rewrite_header(data: bytes, **fields) -> bytes:
    names = ["magic", "version", "hsize", "flags", "body", "payload", "dict", "codec",
             "digest", "reserved", "crc"]
    vals = dict(zip(names, HEADER.unpack_from(data), strict=True))
    vals.update(fields)
    head = HEADER.pack(*[vals[n] for n in names])
    head = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))
    return head + data[HEADER_SIZE:]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: b"PK\x03\x04" + d[4:], "wrong magic"),
        (lambda d: _rewrite_header(d, version=5), "version 5 is newer"),
        (lambda d: _rewrite_header(d, version=1), "version 1 .* re-create the file"),
        (lambda d: _rewrite_header(d, body=1 << 40), "larger than the file can hold"),
        (lambda d: _rewrite_header(d, payload=10**9), "truncated"),
        (lambda d: _rewrite_header(d, dict=1 << 31), "dictionary size"),
        (lambda d: d + b"\0", "unexpected bytes after the payload"),
        (lambda d: d[:HEADER_SIZE - 4] + b"\0\0\0\0" + d[HEADER_SIZE:], "header checksum"),
        (lambda d: b"", "empty file"),
    ],
)
def test_bad_headers_are_named(small, change, message) -> None:
    with pytest.raises(PotlutFormatError, match=message):
        decode(change(small[1]))


def _repack(data: bytes, body: bytes) -> bytes:
    """A file around ``body`` with correct sizes and checksums (a crafted file)."""
    payload, dict_size = container.compress_body(body)
    return _rewrite_header(data, body=len(body), payload=len(payload), dict=dict_size,
                           digest=hashlib.sha256(payload).digest())[:HEADER_SIZE] + payload


def test_crafted_bodies_with_valid_checksums_are_rejected_cleanly(small) -> None:
    """Damage behind valid outer checksums: only PotlutFormatError, never another error."""
    g, data = small
    body = container.build_body(g).body
    rng = np.random.default_rng(1)
    outcomes = {"rejected": 0, "same": 0}
    for i in range(200):
        bad = bytearray(body)
        for pos in rng.integers(0, len(body), 1 + i % 3):
            bad[pos] = int(rng.integers(0, 256))
        try:  # the outer SHA-256 is valid: the section, JSON and table checks must catch it
            back, _ = decode(_repack(data, bytes(bad)))
        except PotlutFormatError:
            outcomes["rejected"] += 1
        else:
            outcomes["same"] += 1
            back.validate()
    assert outcomes["rejected"] >= 150


def test_declared_body_beyond_decompressed_size_is_rejected(small) -> None:
    g, data = small
    body = container.build_body(g).body
    forged = _repack(data, body)
    forged = _rewrite_header(forged, body=len(body) + 1)
    with pytest.raises(PotlutFormatError, match="wrong size"):
        decode(forged)


def test_lzma_bomb_is_bounded() -> None:
    """A small payload claiming a body far beyond it is refused before decompressing."""
    payload = lzma.compress(b"\0" * (64 << 20), format=lzma.FORMAT_RAW,
                            filters=container.lzma_filters(1 << 26))
    head = HEADER.pack(MAGIC, container.VERSION, HEADER_SIZE, 0, 64 << 20, len(payload), 1 << 26, 1,
                       hashlib.sha256(payload).digest(), 0, 0)
    head = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))
    with pytest.raises(PotlutFormatError, match="larger than the file can hold"):
        decode(head + payload)


def test_interrupted_save_leaves_no_file(small, tmp_path, monkeypatch) -> None:
    g, _ = small
    target = tmp_path / "m.potlut"

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save(g, target)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_a_format_error(tmp_path) -> None:
    with pytest.raises(PotlutFormatError, match="no such file"):
        load(tmp_path / "nope.potlut")


@pytest.mark.parametrize(("values", "exponent", "width"), [
    ([0.5, -0.75, 3.0, 0.0], -2, 1),       # q = 2, -3, 12, 0
    ([0.0, 0.0], 0, 1),
    ([300.0, -1.0], 0, 2),
    ([1000.0, 2.0**-10], -10, 3),          # q = 1,024,000
    ([2.0**-149], -149, 1),                # the smallest float32 (subnormal)
    ([3.0 * 2.0**126], 126, 1),
])
def test_scaled_arrays_take_the_integers_they_need(values, exponent, width) -> None:
    a = np.array(values, np.float32)
    blob = container.scaled_bytes(a)
    assert blob is not None and len(blob) == 2 + width * a.size
    assert struct.unpack_from("<h", blob)[0] == exponent
    back = container._from_scaled(memoryview(blob), "a", [a.size])
    assert back.dtype == np.float32 and np.array_equal(back, a)


@pytest.mark.parametrize("values", [[0.1], [np.inf], [np.nan], [2.0**24 + 2, 1.0], [1.0, -0.0],
                                    [1e30, 1.0], [3e38, 2.0**-149]])
def test_arrays_that_need_4_bytes_a_value_are_not_scaled(values) -> None:
    assert container.scaled_bytes(np.array(values, np.float32)) is None


def test_block_floating_point_batchnorm_is_stored_in_a_byte_a_value(small) -> None:
    """A graph whose BatchNorm arrays are 8-bit block floating point stores them ``scaled``
    (one byte a value plus the exponent); version 2 files, which had no such encoding, are
    read, and a ``scaled`` entry in one is refused."""
    from potlut.nn.export import block_round

    g = tiny_graph()
    for k in g.arrays:  # (calibrated clipping states are powers of two: scaled too)
        if ".act.state." in k:
            g.arrays[k] = g.arrays[k] + np.float32(0.1)
    plain = encode(g)[0]
    bn = sorted(k for k in g.arrays if k.endswith((".scale", ".shift")))
    assert bn and {e.encoding for e in decode(plain)[1].arrays} <= {"raw", "derived", "shuff"}
    snapped = tiny_graph()
    for k in bn:
        snapped.arrays[k] = block_round(snapped.arrays[k])
    data, info = encode(snapped)
    stored = {e.name: (e.encoding, e.length) for e in info.arrays}
    assert [stored[k] for k in bn] == [("scaled", 2 + len(g.arrays[k])) for k in bn]
    back, binfo = decode(data)
    assert_same_graph(snapped, back)
    assert binfo.version == 4 and len(data) < len(plain)
    old, old_info = decode(encode(snapped, version=2)[0])
    assert old_info.version == 2 and {e.encoding for e in old_info.arrays} <= {"raw", "derived",
                                                                               "shuff"}
    assert_same_graph(snapped, old)
    with pytest.raises(PotlutFormatError, match="unknown encoding 5"):
        decode(_rewrite_header(encode(snapped, version=3)[0], version=2))
