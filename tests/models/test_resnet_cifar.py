"""ResNet20/56 (option-A shortcuts) and the small CNN: published sizes and output shapes."""

import pytest
import torch

from potlut.errors import PotlutConfigError
from potlut.models import build


@pytest.mark.parametrize(
    ("name", "in_ch", "params"),
    [("resnet20", 3, 269_722), ("resnet56", 3, 853_018), ("small_cnn", 1, 24_058)],
)
def test_parameter_counts(name, in_ch, params):
    """ResNet20 0.27M and ResNet56 0.85M parameters, as in He et al. 2016, Table 6."""
    model = build(name, 10, in_ch)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("size", [8, 28])
def test_small_cnn_takes_8x8_and_28x28(size):
    model = build("small_cnn", 10, 1).eval()
    assert tuple(model(torch.zeros(2, 1, size, size)).shape) == (2, 10)


def test_resnet_shapes_and_unknown_model():
    model = build("resnet20", 100, 3).eval()
    assert tuple(model(torch.zeros(2, 3, 32, 32)).shape) == (2, 100)
    with pytest.raises(PotlutConfigError, match="unknown model 'resnet21'"):
        build("resnet21")
