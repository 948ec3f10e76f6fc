"""Graph export: ResNet20 / SmallCNN structure, unsupported ops, exact weights and outputs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from potlut import models
from potlut.compress import dequantized_weights, encode
from potlut.compress.container import decode
from potlut.errors import PotlutError
from potlut.nn import QuantSpec, calibrate, convert, quant_layers
from potlut.nn.export import export_graph, to_torch


def quantized(name: str, in_shape: tuple[int, int, int], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    q = convert(models.build(name, 10, in_shape[0]), QuantSpec(bits=4))
    x = torch.randn(16, *in_shape)
    calibrate(q, x)
    q.train()
    q(x)  # non-trivial BatchNorm statistics
    return q.eval()


@pytest.fixture(scope="module")
def resnet():
    q = quantized("resnet20", (3, 32, 32))
    return q, export_graph(q, (3, 32, 32))


def test_resnet20_graph_structure(resnet) -> None:
    q, g = resnet
    ops = Counter(n.op for n in g.nodes)
    assert ops == {"input": 1, "conv2d": 19, "batchnorm2d": 19, "relu": 19, "add": 9,
                   "shortcut_a": 2, "adaptive_avgpool2d": 1, "flatten": 1, "linear": 1,
                   "output": 1}
    n_weights = sum(int(np.prod(n.attrs["weight"]["shape"])) for n in g.layers())
    assert n_weights == 268_336  # 19 convs + fc
    bits = [n.attrs["weight"]["bits"] for n in g.quantized_layers()]
    assert bits == [8] + [4] * 18 + [8]
    sc = [n for n in g.nodes if n.op == "shortcut_a"]
    assert [(n.attrs["stride"], n.attrs["pad"], n.attrs["shape"]) for n in sc] == [
        (2, 16, [32, 16, 16]), (2, 32, [64, 8, 8])]
    first = g.node("layers_0_conv1")
    assert first.attrs["act"]["scheme"] == "iospot" and first.attrs["act"]["bits"] == 4
    assert g.nodes[-2].attrs["shape"] == [10]


def test_file_gives_bit_identical_weights_and_outputs(resnet) -> None:
    q, g = resnet
    data, info = encode(g)
    back, _ = decode(data)
    w = dequantized_weights(back)
    for name, layer in quant_layers(q):
        assert torch.equal(torch.from_numpy(w[name]), layer.quantized_weight().detach()), name
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(to_torch(back)(x), q(x))
    assert info.file_bytes < 0.15 * 4 * 269_722  # well under 4.8 bits per weight


class Sigmoidal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class WithGelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(x)


@pytest.mark.parametrize(("model", "name"), [(Sigmoidal(), "sigmoid"), (WithGelu(), "GELU")])
def test_unsupported_ops_are_named(model, name) -> None:
    with pytest.raises(PotlutError, match=name):
        export_graph(model, (1, 8, 8))


def test_float_layers_and_pools_export() -> None:
    """Unquantized ends, max/avg pooling, cat and mean survive the round trip exactly."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 4, 3, padding=1)
            self.b = nn.Conv2d(1, 4, 3, padding=1)
            self.mp = nn.MaxPool2d(2)
            self.ap = nn.AvgPool2d(2)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            y = torch.cat([self.mp(self.a(x)), self.ap(torch.relu(self.b(x)))], dim=1)
            return self.fc(y.mean(dim=(-2, -1)))

    torch.manual_seed(0)
    q = convert(Net(), QuantSpec(quantize_first_last=False))
    x = torch.randn(4, 1, 8, 8)
    g, _ = decode(encode(export_graph(q, (1, 8, 8)))[0])
    assert [n.op for n in g.nodes] == ["input", "conv2d", "maxpool2d", "conv2d", "relu",
                                       "avgpool2d", "cat", "mean", "linear", "output"]
    assert g.node("mean").attrs["dims"] == [2, 3]
    with torch.no_grad():
        assert torch.equal(to_torch(g)(x), q(x))


def test_nn_flatten_module_exports_with_non_negative_axes():
    import torch
    from torch import nn

    from potlut.compress import decode, encode
    from potlut.nn import QuantSpec, calibrate, convert
    from potlut.nn.export import export_graph, to_torch

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )
    q = convert(model, QuantSpec(bits=4))
    x = torch.randn(8, 1, 6, 6)
    calibrate(q, x)
    graph = export_graph(q.eval(), (1, 6, 6))
    (flat,) = [n for n in graph.nodes if n.op == "flatten"]
    assert (flat.attrs["start_dim"], flat.attrs["end_dim"]) == (1, 3)
    back, _ = decode(encode(graph)[0])
    assert torch.equal(to_torch(back).eval()(x), q.eval()(x))
