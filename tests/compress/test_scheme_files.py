"""Every codebook scheme survives export + save/load: bit-identical dequantized weights and
identical fake-quantized outputs of the rebuilt model (no training, calibration only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from potlut import data, models
from potlut.compress import dequantized_weights, load, save
from potlut.nn import QuantSpec, calibrate, convert, quant_layers
from potlut.nn.export import export_graph, to_torch

SCHEMES = ["deepshift", "apot", "pact", "lqnet", "lqnet_layer", "lsq"]


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_round_trip_is_exact(scheme, digits, tmp_path) -> None:
    torch.manual_seed(0)
    q = convert(models.build("small_cnn", 10, 1), QuantSpec(scheme=scheme, bits=4))
    calibrate(q, digits.calibration_batch())
    q.eval()
    path = tmp_path / f"{scheme}.potlut"
    g = export_graph(q, digits.in_shape)
    low = [n for n in g.quantized_layers() if n.attrs["weight"]["bits"] == 4]
    assert len(low) == 2 and all(n.attrs["weight"]["scheme"] == scheme for n in low)
    save(g, path)
    back = load(path)
    w = dequantized_weights(back)
    layers = dict(quant_layers(q))
    assert set(w) == set(layers)
    for name, layer in layers.items():
        want = layer.quantized_weight().detach()
        assert torch.equal(torch.from_numpy(w[name]), want), (scheme, name)
    x = torch.stack([digits.test[i][0] for i in range(64)])
    with torch.no_grad():
        out, ref = to_torch(back)(x), q(x)
    assert torch.equal(out, ref), (scheme, float((out - ref).abs().max()))
    assert np.isfinite(out.numpy()).all()
