"""BatchNorm is stored folded: ``x * scale + shift`` in float32, as PyTorch's CPU kernel
computes it (format v2), and rounded to 8-bit block floating point by ``snap_batchnorm``
(format v3 stores that in a byte a value). The rebuilt float model is the model bit for
bit; the integer engine reads the same two numbers per channel where it read four before."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from potlut.compress import decode, encode
from potlut.infer import program
from potlut.infer.engine import IntEngine
from potlut.nn.export import (
    block_round,
    export_graph,
    fold_batchnorm,
    snap_batchnorm,
    to_torch,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "infer"))
from helpers import random_qmodel  # noqa: E402


def unfolded_affine(qmodel: torch.nn.Module):
    """Format v1's BatchNorm reading: float64 ``w / sqrt(var + eps)`` and ``b - mean * g``
    from the four stored float32 arrays (what ``lower`` computed before the fold)."""
    mods = dict(qmodel.named_modules())

    def affine(graph, bn):
        m = mods[bn.attrs["module"]]
        w, b, rm, rv = (t.detach().double().numpy() for t in
                        (m.weight, m.bias, m.running_mean, m.running_var))
        g = w / np.sqrt(rv + float(m.eps))
        return g, b - rm * g
    return affine


def test_folded_resnet20_is_the_trained_model_bit_for_bit(monkeypatch) -> None:
    q = random_qmodel("resnet20", (3, 32, 32), 4)
    graph, _ = decode(encode(export_graph(q, (3, 32, 32)))[0])
    assert sum(k.endswith((".scale", ".shift")) for k in graph.arrays) == 2 * 19
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(to_torch(graph)(x), q(x))
    # the integer engine gives the logits it gave with the v1 reading of the unfolded
    # BatchNorm (float32 scale/shift can move a requantization multiplier by one unit of
    # its 23rd bit; on this model no logit changes)
    new = IntEngine(graph).run(x.numpy())
    monkeypatch.setattr(program, "_bn_affine", unfolded_affine(q))
    old = IntEngine(program.lower(graph)).run(x.numpy())
    np.testing.assert_array_equal(new, old)


def test_block_round_keeps_8_significant_bits_and_is_idempotent() -> None:
    rng = np.random.default_rng(0)
    v = (rng.standard_normal(64) * 0.07).astype(np.float32)
    r = block_round(v, 8)
    step = 2.0 ** (math.frexp(float(np.abs(v).max()))[1] - 7)  # largest |v| < 128 steps
    q = r.astype(np.float64) / step
    assert np.array_equal(q, np.round(q)) and np.abs(q).max() <= 127
    assert np.abs(r.astype(np.float64) - v).max() <= step / 2
    assert np.array_equal(block_round(r, 8), r)
    assert not np.signbit(block_round(np.array([-1e-9, 1.0], np.float32))).any()  # no -0.0
    assert np.array_equal(block_round(np.zeros(3, np.float32)), np.zeros(3, np.float32))


def test_snapped_model_is_what_the_file_stores() -> None:
    """``snap_batchnorm`` folds every BatchNorm in place to 8-bit block floating point: the
    model's outputs are then those of the rebuilt file bit for bit, and the file stores
    the 2 x 19 ResNet20 arrays ``scaled``, one byte a channel each."""
    q = random_qmodel("resnet20", (3, 32, 32), 4)
    folded = {n: fold_batchnorm(m) for n, m in q.named_modules()
              if isinstance(m, torch.nn.BatchNorm2d)}
    snap_batchnorm(q)
    snap_batchnorm(q)  # idempotent
    data, info = encode(export_graph(q, (3, 32, 32)))
    graph, _ = decode(data)
    for name, (scale, shift) in folded.items():
        assert np.array_equal(graph.arrays[f"{name}.scale"], block_round(scale))
        assert np.array_equal(graph.arrays[f"{name}.shift"], block_round(shift))
    sizes = [(e.encoding, e.length) for e in info.arrays if e.name.endswith((".scale", ".shift"))]
    assert len(sizes) == 38 and all(enc == "scaled" for enc, _ in sizes)
    assert sum(n for _, n in sizes) == 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64) + 38 * 2
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(to_torch(graph)(x), q(x))
