"""Format v4's compact architecture JSON: what it leaves out comes back exactly, versions 2
and 3 are still read, and a compact graph that does not add up is a PotlutFormatError."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from potlut import models
from potlut.compress import archjson, container
from potlut.compress.container import decode, encode
from potlut.errors import PotlutFormatError
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.export import export_graph

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_potlut as fz  # noqa: E402


def _json(x):
    return json.loads(json.dumps(x))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    q = convert(models.build("resnet20", 10, 3), QuantSpec(bits=4))
    calibrate(q, torch.randn(8, 3, 32, 32))
    return export_graph(q.eval(), (3, 32, 32))


def test_resnet20_architecture_shrinks_and_comes_back(resnet) -> None:
    """The exporter names nodes by the default rule, so the file stores no name; inputs
    are written only for the adds and shortcuts ("k nodes back")."""
    g = resnet
    names = [n.name for n in g.nodes]
    assert names[:7] == ["input", "conv1", "bn1", "relu", "layers_0_conv1", "layers_0_bn1",
                         "relu_1"]
    assert names[-6:] == ["add_8", "relu_18", "adaptive_avgpool2d", "flatten", "fc", "output"]
    assert g.node("add_3").inputs == ["layers_3_bn2", "shortcut_a"]
    small = archjson.compact(_json(g.architecture()))
    assert not any("name" in n for n in small["nodes"])
    inputs = [(n["op"], n["inputs"]) for n in small["nodes"] if "inputs" in n]
    assert inputs == [("add", [1, 6])] * 3 + [("shortcut_a", [6]), ("add", [2, 1])] + [
        ("add", [1, 6])] * 2 + [("shortcut_a", [6]), ("add", [2, 1])] + [("add", [1, 6])] * 2
    conv = small["nodes"][4]["attrs"]  # widths and code counts follow from shapes and bits
    assert not {"in_channels", "out_channels"} & set(conv)
    assert conv["weight"] == {"scheme": "iospot", "bits": 4, "exponent": 2,
                              "shape": [16, 16, 3, 3]}
    data, info = encode(g)
    old, old_info = encode(g, version=3)
    assert (info.arch_bytes, old_info.arch_bytes) == (9211, 14167)
    assert (len(data), len(old)) == (123983, 124396)
    # S-Huff table kinds (first byte): the 432-weight 8-bit conv1 over 128 codes takes the
    # truncated binary table in v4 (0x80), its Huffman lengths in 4 bits in v3
    for inf, first in ((info, 0x80), (old_info, 4)):
        kinds = [inf.data[e.offset] for e in inf.arrays if e.encoding == "shuff"]
        assert kinds == [first] + [3] * 18 + [4]
    back, back_info = decode(data)
    assert back_info.version == 4 and back.architecture() == _json(g.architecture())
    old_back, old_back_info = decode(old)
    assert old_back_info.version == 3 and old_back.architecture() == back.architecture()


def _file(arch: dict, coder: str = "shuff", version: int | None = None) -> bytes:
    data = fz.file_of(fz.body_of(arch, *fz.copy(coder)[1:], retile=True))
    return data if version is None else _rewrite_version(data, version)


def _rewrite_version(data: bytes, version: int) -> bytes:
    import struct
    import zlib
    head = bytearray(data[: container.HEADER_SIZE])
    struct.pack_into("<H", head, 8, version)
    struct.pack_into("<I", head, container.HEADER_SIZE - 4, zlib.crc32(head[:-4]))
    return bytes(head) + data[container.HEADER_SIZE:]


def _compact_base() -> dict:
    arch = fz.copy("shuff")[0]
    arch["graph"] = archjson.compact(arch["graph"])
    return arch


def test_names_and_values_that_are_not_defaults_are_kept() -> None:
    """The fuzz graph's names are its own ("x", "c0", "bn"); an activation with a code count
    other than 2^(bits-1) (signed) keeps it; full and compact forms read alike in v4."""
    arch = fz.copy("shuff")[0]
    arch["graph"]["nodes"][3]["attrs"]["act"]["n_codes"] = 5
    full = _json(arch["graph"])
    small = archjson.compact(_json(full))
    assert [n.get("name") for n in small["nodes"]] == ["x", None, None, None, None]
    assert small["nodes"][3]["attrs"]["act"]["n_codes"] == 5
    assert archjson.expand(_json(small)) == full
    for form in (small, full):
        blobs_arch = {"format": "potlut", "graph": _json(form)}
        blobs_arch["graph"]["nodes"][3]["attrs"]["act"]["n_codes"] = 8  # the stored arrays'
        graph, info = decode(_file(blobs_arch))
        assert info.version == 4 and [n.name for n in graph.nodes] == ["x", "c0", "bn", "c1",
                                                                       "output"]
        assert graph.node("c1").attrs["act"]["n_codes"] == 8
        assert graph.node("c1").attrs["in_channels"] == 3
        assert graph.node("bn").attrs["num_features"] == 3


def test_a_compact_graph_in_a_version_3_file_is_refused() -> None:
    arch = _compact_base()
    assert decode(_file(arch))[1].version == 4
    with pytest.raises(PotlutFormatError, match=r"nodes\[0\] has no 'inputs'"):
        decode(_file(arch, version=3))


def _set(path: tuple, value) -> dict:
    arch = _compact_base()
    target = arch["graph"]["nodes"]
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return arch


@pytest.mark.parametrize(("path", "value", "message"), [
    ((1, "inputs"), [2], "refers 2 nodes back"),
    ((1, "inputs"), [0], "refers 0 nodes back"),
    ((1, "inputs"), [-1], "refers -1 nodes back"),
    ((1, "inputs"), [True], "inputs must be names"),
    ((2, "name"), "output", "repeated"),  # the last node's default name
    ((2, "attrs", "shape"), None, "'num_features' missing"),
    ((3, "attrs", "in_channels"), 4, "does not match out_channels / in_channels"),
    ((3, "attrs", "weight", "quantized"), 1, "quantized must be true or false"),
    ((3, "attrs", "weight", "bits"), 40, "'n_codes' missing"),
])
def test_a_compact_graph_that_does_not_add_up_is_refused(path, value, message) -> None:
    with pytest.raises(PotlutFormatError, match=message):
        decode(_file(_set(path, value)))
