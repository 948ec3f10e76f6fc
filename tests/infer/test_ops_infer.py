"""Operation counts: one table read per MAC of every low-bit layer (FIXOPS accounting)."""

from __future__ import annotations

import numpy as np

from potlut.infer import lower, op_counts
from potlut.metrics import layer_costs, total_macs
from potlut.nn.export import to_torch

from .helpers import random_graph


def test_table_reads_equal_the_macs_of_the_low_bit_layers() -> None:
    g = random_graph("resnet20", (3, 32, 32), 4, seed=4)
    counts = op_counts(lower(g))
    model = to_torch(g)
    macs = {c.name: c.macs for c in layer_costs(model, (3, 32, 32))}
    bits = {n.attrs["module"]: n.attrs["weight"]["bits"] for n in g.layers()}
    assert len(counts["layers"]) == len(macs) == 20
    for lo in counts["layers"]:
        m = macs["layers." + lo["name"].replace(".", "__")]
        assert lo["macs"] == m
        if bits[lo["name"]] == 8:  # first/last layers: int8 x int8 -> int32 MACs
            assert (lo["mode"], lo["int8_macs"], lo["table_reads"]) == ("int8", m, 0)
        else:
            assert (lo["mode"], lo["table_reads"], lo["int8_macs"]) == ("plut", m, 0)
            assert lo["accumulate_adds"] == lo["shift_shifts"] == m
            assert (lo["plut_entries"], lo["plut_full_entries"], lo["plut_bytes"]) == (36, 64, 72)
    t = counts["total"]
    assert t["macs"] == total_macs(model, (3, 32, 32)) == 40_551_040
    assert t["table_reads"] == 40_551_040 - 442_368 - 640  # all but conv1 (3->16) and fc
    assert t["int8_macs"] == 442_368 + 640
    p, s = counts["plut"], counts["bit_shift"]
    # requantization multiplies run where the program cannot decide the next codes on the
    # accumulator: the 9 block-closing convs, whose output meets a residual add
    # (16x32x32 + 32x16x16 + 64x8x8 outputs, 3 blocks each)
    residual_outs = 3 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8)
    assert p["multiplies_low_bit_layers"] == s["multiplies_low_bit_layers"] == residual_outs
    # the numba kernel runs the same thresholds (the program's, not the backend's choice)
    numba = op_counts(lower(g), "numba")
    assert numba["plut"]["multiplies_low_bit_layers"] == residual_outs
    assert numba["total"]["executed_reads"] == t["executed_reads"] == _nonzero_reads(g)
    assert s["shifts"] - p["shifts"] == t["table_reads"] and s["table_reads"] == 0
    assert p["table_bytes"] == 18 * 72 and p["adds"] == s["adds"]


def _nonzero_reads(g) -> int:
    """Weights != 0 (from the file's codes and codebooks) x output positions, all layers:
    what the kernels loop over, counted without the engine."""
    total = 0
    for n in g.layers():
        mod = n.attrs["module"]
        if n.attrs["weight"]["quantized"]:
            cb = g.arrays[f"{mod}.weight.codebook"]
            nz = int((cb[g.arrays[f"{mod}.weight.codes"].astype(np.int64)] != 0).sum())
        else:
            nz = int((g.arrays[f"{mod}.weight"] != 0).sum())
        shape = n.attrs["shape"]
        total += nz * (shape[1] * shape[2] if n.op == "conv2d" else 1)
    return total


def test_small_cnn_counts() -> None:
    counts = op_counts(lower(random_graph("small_cnn", (1, 8, 8), 3)))
    t = counts["total"]
    # digits 8x8: conv(1->16) 64 px, conv(16->32 /2) 16 px, conv(32->64 /2) 4 px, fc 64->10
    assert t["int8_macs"] == 16 * 9 * 64 + 64 * 10
    assert t["table_reads"] == 32 * 144 * 16 + 64 * 288 * 4
    assert [lo["plut_entries"] for lo in counts["layers"]] == [0, 10, 10, 0]
