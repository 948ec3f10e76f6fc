"""ResNet18 / SqueezeNet 1.1 / ShuffleNetV2 1.0 / SCN: published sizes, shapes, convert."""

import pytest
import torch
from torch import nn

from potlut import models
from potlut.models.scn import SCN, rank_regularization
from potlut.models.shufflenetv2 import channel_shuffle
from potlut.nn import QuantSpec, convert
from potlut.nn.layers import QUANT_LAYERS, quant_layers


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "name, classes, expected",
    [
        ("resnet18", 1000, 11_689_512),  # torchvision resnet18 num_params
        ("squeezenet1_1", 1000, 1_235_496),  # torchvision squeezenet1_1
        ("shufflenet_v2_x1_0", 1000, 2_278_604),  # torchvision shufflenet_v2_x1_0
        ("resnet18_cifar", 10, 11_173_962),  # 3x3 stem: 7*7*3*64 - 3*3*3*64 fewer, 10-way fc
        ("scn", 7, 11_176_512 + 513 + 512 * 7 + 7),  # backbone + attention + classifier
    ],
)
def test_parameter_counts_match_published_architectures(name, classes, expected):
    assert n_params(models.build(name, classes, 3)) == expected


@pytest.mark.parametrize(
    "name, size, classes",
    [("resnet18", 64, 5), ("resnet18_cifar", 32, 10), ("squeezenet1_1", 32, 10),
     ("shufflenet_v2_x1_0", 32, 100), ("scn", 64, 7)],
)
def test_forward_shape_and_every_weight_layer_quantized(name, size, classes):
    torch.manual_seed(0)
    m = models.build(name, classes, 3)
    assert m(torch.randn(2, 3, size, size)).shape == (2, classes)
    plain = [n for n, mod in m.named_modules() if type(mod) in (nn.Conv2d, nn.Linear)]
    q = convert(m, QuantSpec(bits=4))
    qnames = [n for n, _ in quant_layers(q)]
    assert qnames == plain  # every conv / linear became a quantized layer, in order
    assert not any(type(mod) in (nn.Conv2d, nn.Linear) for mod in q.modules())
    first, last = quant_layers(q)[0][1], quant_layers(q)[-1][1]
    assert (first.bits_w, last.bits_w) == (8, 8)
    assert {m.bits_w for _, m in quant_layers(q)[1:-1]} == {4}
    assert all(isinstance(mod, QUANT_LAYERS) for _, mod in quant_layers(q))


def test_quantized_squeezenet_runs_and_backpropagates():
    torch.manual_seed(0)
    q = convert(models.build("squeezenet1_1", 10, 3), QuantSpec(bits=3))
    out = q(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    grads = [m.weight.grad for _, m in quant_layers(q)]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_scn_classifier_is_last_layer_and_logits_scale_with_attention():
    torch.manual_seed(0)
    m = SCN(num_classes=7)
    names = [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)]
    assert names == ["alpha.0", "fc"]
    m.eval()
    x = torch.randn(2, 3, 32, 32)
    feat = m.backbone(x)
    alpha = m.alpha(feat)
    assert torch.allclose(m(x), alpha * m.fc(feat), atol=1e-6)
    assert m.aux_loss() == 0.0  # eval mode keeps no attention weights


def test_rank_regularization_matches_hand_computed_values():
    a = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.85, 0.1])
    # beta 0.7 of 10 -> top 7: .9 .85 .8 .7 .6 .5 .4 (mean 0.67857); low: .3 .2 .1 (0.2)
    assert rank_regularization(a).item() == pytest.approx(0.0)  # gap 0.479 > margin 0.15
    b = torch.tensor([0.55, 0.5, 0.5, 0.45])
    # top round(2.8)=3: mean 0.51667, low 0.45 -> 0.15 - 0.06667 = 0.08333
    assert rank_regularization(b).item() == pytest.approx(0.15 - (1.55 / 3 - 0.45), abs=1e-6)
    assert rank_regularization(torch.tensor([0.5])).item() == 0.0


def test_scn_aux_loss_has_gradient_into_attention_head():
    torch.manual_seed(1)
    m = SCN(num_classes=7)
    m.train()
    nn.init.zeros_(m.alpha[0].weight)  # every alpha = sigmoid(b): gap 0 -> loss = margin
    m(torch.randn(6, 3, 16, 16))
    loss = m.aux_loss()
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    loss.backward()
    assert m.alpha[0].weight.grad.abs().sum() > 0
    assert m.aux_loss() == 0.0  # consumed


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
