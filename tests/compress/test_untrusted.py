"""Untrusted .potlut files: bounded memory, and every crafted defect of issue 17 is a
PotlutFormatError (bodies carry valid checksums, so the format checks are what reject)."""

from __future__ import annotations

import copy as deep
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from potlut.compress import container, multibit
from potlut.errors import PotlutFormatError

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_potlut as fz  # noqa: E402

HERE = Path(__file__).parent


def test_structure_aware_fuzzing_stays_under_256_mb_and_2_s() -> None:
    """3000 crafted files (each <= 1 MB; about half multi-bit) under an address-space cap of
    warm-up + 256 MB, none taking more than 2 s of CPU to accept or refuse (issue 17's goal;
    the slowest takes ~0.6 s here)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, str(HERE / "fuzz_potlut.py"), "3000"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    largest = [line.split() for line in lines[:-1]]
    assert [int(f[1]) < 2048 for f in largest] == [True] * 5  # ~1 KB files
    assert int(largest[0][2]) > 2 * ((1 << 24) - 54)  # 2^24 - 54 codes and signs decoded
    assert int(largest[3][2]) == 2 * int(largest[0][2])  # base + one nested width: accepted
    assert int(largest[4][2]) == 0  # base + two widths: over the multi-bit weight limit
    assert max(float(f[3]) for f in largest) < 2.0
    word, cases, accepted, multi, multi_accepted, slowest = lines[-1].split()
    assert word == "ok" and int(cases) == 3000 and float(slowest) < 2.0
    assert 0 < int(accepted) < 3000  # both outcomes happen: the generator is not trivial
    assert 1000 < int(multi) < 2000 and 0 < int(multi_accepted) < int(multi)


def _decode(arch: dict, entries: list[dict], blobs: dict[str, bytes], retile: bool = True,
            nan: bool = False):
    body = fz.body_of(arch, entries, blobs, retile, nan)
    assert not nan or b"NaN" in body
    data = fz.file_of(body)
    assert len(data) < 1 << 20
    return container.decode(data)


def _entry(entries: list[dict], name: str) -> dict:
    return next(e for e in entries if e["name"] == name)


def test_the_base_file_is_accepted() -> None:
    for coder in fz.BASE:
        graph, info = _decode(*fz.copy(coder))
        assert sorted(graph.arrays) == sorted(fz.GRAPH.arrays)
        for k, v in fz.GRAPH.arrays.items():
            assert graph.arrays[k].dtype == v.dtype
            np.testing.assert_array_equal(graph.arrays[k], v, err_msg=k)
        derived = [e.name for e in info.arrays if e.encoding == "derived"]
        assert derived == ["c1.weight.codebook", "c1.act.codebook"]  # c0's is stored
        # integers times a power of two, one byte a value after the i16 exponent
        scaled = [(e.name, e.length) for e in info.arrays if e.encoding == "scaled"]
        assert scaled == [("c0.weight.codebook", 2 + 8), ("bn.scale", 2 + 3),
                          ("c1.act.state.a", 2 + 1)]


@pytest.mark.parametrize("coder", ["shuff", "rans", "packed"])
def test_huge_declared_layer_is_refused_before_decoding(coder) -> None:
    """Issue 17: 2^26 weights of one length-1 / frequency-M code (S-Huff: 4.1 GiB before).

    Shapes live in the graph only; the per-file cap on coded weights refuses the layer
    before its (short) stream is read.
    """
    arch, entries, blobs = fz.copy(coder)
    node = arch["graph"]["nodes"][-2]["attrs"]
    node["weight"]["shape"], node["out_channels"] = [1 << 26, 3, 1, 1], 1 << 26
    node["kernel_size"], node["padding"], node["shape"] = [1, 1], [0, 0], [1 << 26, 4, 4]
    node["bias"] = False
    entries = [e for e in entries if e["name"] != "c1.bias"]
    blobs["c1.weight"] = fz.zero_stream(coder, 1 << 10)
    with pytest.raises(PotlutFormatError, match=r"201326646 coded weights exceed the limit "
                                                r"of 16777216"):
        _decode(arch, entries, blobs)


def test_codes_beyond_the_dtype_do_not_wrap() -> None:
    """uint8 codes over a 300-entry codebook (codes up to 299) were silently wrapped."""
    arch, entries, blobs = fz.copy("packed")
    blobs["c0.weight.codebook"] = container.raw_bytes(np.linspace(0, 1, 300).astype(np.float32))
    _set(entries, "c0.weight.codebook", encoding=container.ENCODING_IDS["raw"])
    arch["graph"]["nodes"][1]["attrs"]["weight"]["n_codes"] = 300
    from potlut.compress.sharing import pack_raw
    blobs["c0.weight"] = pack_raw(np.full(54, 299, np.uint16), np.zeros(54, bool), 300)
    with pytest.raises(PotlutFormatError, match="300 codes do not fit uint8"):
        _decode(arch, entries, blobs)


def _set(entries: list[dict], name: str, **kw) -> None:
    _entry(entries, name).update(kw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a, t, b: _set(t, "c1.act.state.a", shape=[0, 1 << 31]), "too large"),
        (lambda a, t, b: _set(t, "c1.act.state.a", shape=[1] * 9), "too large"),
        (lambda a, t, b: t.append(dict(t[0])), "does not hold the 10 arrays"),
        (lambda a, t, b: t.pop(3), "does not hold the 10 arrays"),
        (lambda a, t, b: _set(t, "c0.weight.codebook", encoding=1), "cannot be derived"),
        (lambda a, t, b: _set(t, "bn.shift", encoding=1), "cannot be derived"),
        (lambda a, t, b: _set(t, "bn.shift", encoding=2), "is not raw, derived or scaled"),
        (lambda a, t, b: _set(t, "bn.shift", encoding=5), "scaled bytes do not hold shape"),
        (lambda a, t, b: _set(t, "bn.scale", encoding=0), "bytes do not hold shape"),
        (lambda a, t, b: b.update({"bn.scale": b["bn.scale"] + b"\0"}),
         "scaled bytes do not hold shape"),
        (lambda a, t, b: b.update({"bn.scale": struct.pack("<h", 200) + b["bn.scale"][2:]}),
         "not exact float32"),
        (lambda a, t, b: b.update({"bn.scale": struct.pack("<h", -160) + b["bn.scale"][2:]}),
         "not exact float32"),
        (lambda a, t, b: b.update({"bn.scale": struct.pack("<h", 2000) + b["bn.scale"][2:]}),
         "not exact float32"),
        (lambda a, t, b: b.update({"bn.scale": struct.pack("<h", -2000) + b["bn.scale"][2:]}),
         "not exact float32"),
        (lambda a, t, b: _set(t, "c0.weight", encoding=0), "is not a weight coder"),
        (lambda a, t, b: _set(t, "c0.weight", dtype=9), "must be uint8 or uint16"),
        (lambda a, t, b: _set(t, "bn.shift", dtype=1), "expected kind 'f'"),
        (lambda a, t, b: _set(t, "bn.shift", dtype=77), "unknown encoding 0 or dtype 77"),
        (lambda a, t, b: _set(t, "bn.shift", encoding=9), "unknown encoding 9"),
        (lambda a, t, b: a["graph"]["nodes"][0]["attrs"].update(shape=[2, 4, 5]),
         "differs from in_shape"),
        (lambda a, t, b: a["graph"]["nodes"][1]["attrs"].update(shape=[5, 4, 4]),
         "does not match out_channels"),
        (lambda a, t, b: a["graph"]["nodes"][3]["attrs"]["act"].update(exponent=2000),
         "cannot be derived"),
    ],
)
def test_table_and_graph_defects_are_named(change, message) -> None:
    arch, entries, blobs = fz.copy("shuff")
    change(arch, entries, blobs)
    with pytest.raises(PotlutFormatError, match=message):
        _decode(arch, entries, blobs)


def test_lengths_must_tile_the_data_section() -> None:
    """Offsets are implicit (each array starts where the one before ends), so arrays cannot
    overlap; a length that does not fit its shape, or lengths that do not add up to DATA,
    are refused."""
    arch, entries, blobs = fz.copy("shuff")
    _set(entries, "bn.shift", length=8)
    with pytest.raises(PotlutFormatError, match="8 bytes do not hold shape"):
        _decode(arch, entries, blobs, retile=False)
    arch, entries, blobs = fz.copy("shuff")
    _set(entries, "c1.weight", length=_entry(entries, "c1.weight")["length"] - 1)
    with pytest.raises(PotlutFormatError, match="arrays cover .* of the .* bytes"):
        _decode(arch, entries, blobs, retile=False)


def test_json_nan_is_rejected() -> None:
    with pytest.raises(PotlutFormatError, match="architecture JSON is malformed"):
        _decode(*fz.copy("shuff"), nan=True)


def test_packed_sign_on_a_zero_weight_is_rejected() -> None:
    arch, entries, blobs = fz.copy("packed")
    codes = fz.GRAPH.arrays["c1.weight.codes"].reshape(-1)
    i = int(np.flatnonzero(codes == 0)[0])  # weight i is zero: set its sign bit (bit 4 i)
    blob = bytearray(blobs["c1.weight"])
    blob[(4 * i) // 8] |= 0x80 >> ((4 * i) % 8)
    blobs["c1.weight"] = bytes(blob)
    with pytest.raises(PotlutFormatError, match="sign bit set on a weight whose value is zero"):
        _decode(arch, entries, blobs)


def test_lzma_dictionary_larger_than_the_body_is_rejected() -> None:
    body = fz.body_of(*fz.copy("shuff"), True)
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


def test_a_state_named_like_weight_codes_is_not_a_coded_weight() -> None:
    """An activation state called ``weight.codes`` stays a raw float array of the table."""
    arch, entries, blobs = fz.copy("shuff")
    arch["graph"]["nodes"][3]["attrs"]["act"]["state"] = ["weight.codes"]
    entries[-1]["name"] = "c1.act.state.weight.codes"
    blobs["c1.act.state.weight.codes"] = blobs.pop("c1.act.state.a")
    graph, _ = _decode(arch, entries, blobs)
    assert graph.arrays["c1.act.state.weight.codes"].dtype == np.float32


def _multi(mutate=None, nan: bool = False) -> bytes:
    base_file, doc, data = deep.deepcopy(fz.MULTI)
    if mutate:
        data = mutate(doc["deltas"]["2"]["arrays"], data)
    return fz.multi_file_of(base_file, doc, data, nan)


def _refused(data: bytes, words: str) -> None:
    with pytest.raises(PotlutFormatError, match=words):
        multibit.decode_multi(data)


def test_multibit_file_of_the_fuzzer_round_trips() -> None:
    graphs, info = multibit.decode_multi(_multi())
    assert info.widths == [2, 4]
    for n in ("c0", "c1"):
        assert np.array_equal(graphs[2].arrays[f"{n}.weight.codes"],
                              fz.GRAPH.arrays[f"{n}.weight.codes"] >> 1)


def test_multibit_refuses_nan_json() -> None:
    _refused(_multi(nan=True), "malformed")


def test_multibit_refuses_a_stream_declaring_more_weights_than_its_layer() -> None:
    def big(entries, data):  # 2^23 zero codes declared in 1 KB, for a 54-weight layer
        blob = fz.zero_stream("shuff", 1 << 23)
        entries[:] = [{**entries[0], "shape": [1 << 23, 1, 1, 1], "offset": 0,
                       "length": len(blob), "crc32": zlib.crc32(blob)}]
        return blob
    _refused(_multi(big), r"no coded layer c0.weight of shape \[8388608, 1, 1, 1\]")


def test_multibit_refuses_a_second_entry_for_one_array() -> None:
    def twice(entries, data):
        e = entries[0]
        entries.append({**e, "offset": len(data)})
        return data + data[e["offset"] : e["offset"] + e["length"]]
    _refused(_multi(twice), "a second entry for the same array")


def test_multibit_refuses_unsorted_candidates_and_a_selection_outside_its_list() -> None:
    def nested(cands, sel: bytes):
        def f(entries, data):
            entries[:] = [{**entries[0], "encoding": "nested", "candidates": cands,
                           "offset": 0, "length": len(sel), "crc32": zlib.crc32(sel)}]
            return sel
        return f
    _refused(_multi(nested([[1, 0]] * 8, bytes(7))), "not strictly ascending")
    # c0 has 54 weights; with candidates [0, 1, 2] for every base code each takes 2 bits
    _refused(_multi(nested([[0, 1, 2]] * 8, b"\xff" * 14)), "outside its candidate list")
    _refused(_multi(nested([[0, 1, 2]] * 8, bytes(13))), "14")  # wrong length
