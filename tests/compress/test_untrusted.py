"""Untrusted .potlut files: bounded memory, and every crafted defect of issue 17 is a
PotlutFormatError (bodies carry valid checksums, so the format checks are what reject)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from potlut.compress import container
from potlut.errors import PotlutFormatError

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_potlut as fz  # noqa: E402

HERE = Path(__file__).parent


def test_structure_aware_fuzzing_stays_under_256_mb() -> None:
    """3000 crafted files (each <= 1 MB) under an address-space cap of warm-up + 256 MB."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, str(HERE / "fuzz_potlut.py"), "3000"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    largest = [line.split() for line in lines[:-1]]
    assert [int(f[1]) < 2048 for f in largest] == [True] * 3  # ~1 KB files, accepted
    assert int(largest[0][2]) > 2 * ((1 << 24) - 54)  # 2^24 - 54 codes and signs decoded
    word, cases, accepted = lines[-1].split()
    assert word == "ok" and int(cases) == 3000
    assert 0 < int(accepted) < 3000  # both outcomes happen: the generator is not trivial


def _arch(coder: str) -> tuple[dict, dict[str, bytes]]:
    arch, blobs = fz.BASE[coder]
    return json.loads(json.dumps(arch)), dict(blobs)


def _decode(arch: dict, blobs: dict[str, bytes], retile: bool = True, nan: bool = False):
    body = fz.body_of(arch, blobs, retile, nan)
    assert not nan or b"NaN" in body
    data = fz.file_of(body)
    assert len(data) < 1 << 20
    return container.decode(data)


def _entry(arch: dict, name: str) -> dict:
    return next(e for e in arch["arrays"] if e["name"] == name)


def test_the_base_file_is_accepted() -> None:
    for coder in fz.BASE:
        graph, _ = _decode(*_arch(coder))
        for k, v in fz.GRAPH.arrays.items():
            np.testing.assert_array_equal(graph.arrays[k], v, err_msg=k)


@pytest.mark.parametrize("coder", ["shuff", "rans", "packed"])
def test_huge_declared_layer_is_rejected_before_decoding(coder) -> None:
    """Issue 17: 2^26 weights of one length-1 / frequency-M code (S-Huff: 4.1 GiB before).

    The stream here is short: the shape alone must be refused, before any decoding (an
    8 MB all-zero stream is refused earlier still, by the body-to-payload ratio).
    """
    arch, blobs = _arch(coder)
    _entry(arch, "c1.weight")["shape"] = [1 << 26, 1, 1, 1]
    blobs["c1.weight"] = bytes([1] + [0] * 7) + struct.pack("<Q", 1 << 26) + bytes(1 << 10)
    with pytest.raises(PotlutFormatError, match=r"declares shape \[67108864, 1, 1, 1\]"):
        _decode(arch, blobs)
    node = arch["graph"]["nodes"][-2]["attrs"]  # graph made to agree: the total cap holds
    node["weight"]["shape"], node["out_channels"] = [1 << 26, 1, 1, 1], 1 << 26
    node["shape"] = [1 << 26, 4, 4]
    _entry(arch, "c1.bias")["shape"] = [1 << 26]
    with pytest.raises(PotlutFormatError, match=r"671089\d\d coded weights exceed the limit "
                                                r"of 16777216"):
        _decode(arch, blobs)


def test_codes_beyond_the_dtype_do_not_wrap() -> None:
    """uint8 codes over a 300-entry codebook (codes up to 299) were silently wrapped."""
    arch, blobs = _arch("packed")
    cb = np.linspace(0, 1, 300).astype(np.float32)
    blobs["c1.weight.codebook"] = cb.tobytes()
    _entry(arch, "c1.weight.codebook")["shape"] = [300]
    arch["graph"]["nodes"][-2]["attrs"]["weight"]["n_codes"] = 300
    codes = np.full(36, 299, np.uint16)
    from potlut.compress.sharing import pack_raw
    blobs["c1.weight"] = pack_raw(codes, np.zeros(36, bool), 300)
    with pytest.raises(PotlutFormatError, match="300 codes do not fit uint8"):
        _decode(arch, blobs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a, b: _entry(a, "bn.bias").update(shape=[0, 1 << 62]), "too large"),
        (lambda a, b: a["arrays"].append({"name": "c9.weight.codebook", "encoding": "raw",
                                          "dtype": "float32", "shape": [0], "offset": 0,
                                          "length": 0, "crc32": 0}), "not used by any node"),
        (lambda a, b: a["arrays"].pop(0), "is missing"),
        (lambda a, b: a["graph"]["nodes"][0]["attrs"].update(shape=[2, 4, 5]),
         "differs from in_shape"),
        (lambda a, b: a["graph"]["nodes"][1]["attrs"].update(shape=[5, 4, 4]),
         "does not match out_channels"),
        (lambda a, b: _entry(a, "c0.weight").update(codebook="c1.weight.codebook"),
         "codebook must be"),
    ],
)
def test_table_and_graph_defects_are_named(change, message) -> None:
    arch, blobs = _arch("shuff")
    change(arch, blobs)
    with pytest.raises(PotlutFormatError, match=message):
        _decode(arch, blobs)


def test_overlapping_arrays_are_rejected() -> None:
    arch, blobs = _arch("shuff")
    fz.body_of(arch, blobs, retile=True)  # offsets as written
    a, b = _entry(arch, "bn.bias"), _entry(arch, "bn.running_mean")
    b["offset"] = a["offset"]  # same bytes read twice (both 3 float32)
    blobs["bn.running_mean"] = blobs["bn.bias"]
    with pytest.raises(PotlutFormatError, match="overlaps another array"):
        _decode(arch, blobs, retile=False)


def test_json_nan_is_rejected() -> None:
    with pytest.raises(PotlutFormatError, match="architecture JSON is malformed"):
        _decode(*_arch("shuff"), nan=True)


def test_packed_sign_on_a_zero_weight_is_rejected() -> None:
    arch, blobs = _arch("packed")
    codes = fz.GRAPH.arrays["c1.weight.codes"].reshape(-1)
    i = int(np.flatnonzero(codes == 0)[0])  # weight i is zero: set its sign bit (bit 4 i)
    blob = bytearray(blobs["c1.weight"])
    blob[(4 * i) // 8] |= 0x80 >> ((4 * i) % 8)
    blobs["c1.weight"] = bytes(blob)
    with pytest.raises(PotlutFormatError, match="sign bit set on a weight whose value is zero"):
        _decode(arch, blobs)


def test_lzma_dictionary_larger_than_the_body_is_rejected() -> None:
    body = fz.body_of(*_arch("shuff"), True)
    data = bytearray(fz.file_of(body))
    names = ["magic", "version", "hsize", "flags", "body", "payload", "dict", "codec",
             "digest", "reserved", "crc"]
    vals = dict(zip(names, container.HEADER.unpack_from(data), strict=True))
    vals["dict"] = 1 << 26
    head = container.HEADER.pack(*[vals[n] for n in names])
    import zlib
    head = head[:-4] + struct.pack("<I", zlib.crc32(head[:-4]))
    with pytest.raises(PotlutFormatError, match="exceeds what a"):
        container.decode(head + bytes(data[container.HEADER_SIZE:]))
