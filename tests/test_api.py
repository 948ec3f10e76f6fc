"""The public entry points: potlut.quantize / export / load / engine."""

from __future__ import annotations

import numpy as np
import torch

import potlut
from potlut import models
from potlut.infer import IntEngine, lower
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.export import export_graph


def test_quantize_export_load_engine(tmp_path) -> None:
    torch.manual_seed(0)
    fp32 = models.build("small_cnn", 10, 1)
    batch = torch.randn(32, 1, 8, 8)
    spec = potlut.QuantSpec(bits=3)
    assert spec == QuantSpec(bits=3)
    q = potlut.quantize(fp32, spec, calibration=batch)
    ref = convert(fp32, QuantSpec(bits=3))
    calibrate(ref, batch)
    assert q.state_dict().keys() == ref.state_dict().keys()
    for k, v in q.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
    q.eval()

    sizes = potlut.export(q, tmp_path / "m.potlut", (1, 8, 8), meta={"model": "small_cnn"})
    assert sizes["file_bytes"] == (tmp_path / "m.potlut").stat().st_size
    graph = potlut.load(tmp_path / "m.potlut")
    assert graph.meta["model"] == "small_cnn" and len(graph.quantized_layers()) == 4
    x = torch.randn(5, 1, 8, 8)
    got = potlut.engine(tmp_path / "m.potlut", "numba").run(x)
    np.testing.assert_array_equal(got, IntEngine(lower(export_graph(q, (1, 8, 8))), "numba").run(x))
    fq = q(x).detach().double().numpy()
    scale = potlut.engine(graph).scale  # codes are exact; the logits' floor costs < 1 unit
    assert np.abs(got * scale - fq).max() < 2 * scale
