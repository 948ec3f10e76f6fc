"""BatchNorm is stored folded (format v2): ``x * scale + shift`` in float32, as PyTorch's CPU
kernel computes it. The rebuilt float model is the trained one bit for bit; the integer
engine reads the same two numbers per channel where it read four before."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from potlut.compress import decode, encode
from potlut.infer import program
from potlut.infer.engine import IntEngine
from potlut.nn.export import export_graph, to_torch

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
