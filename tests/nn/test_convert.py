"""convert(): layer swap, 8-bit ends, original untouched, PoT everywhere in IOS-PoT layers."""

import pytest
import torch

from potlut.errors import PotlutConfigError
from potlut.models import build
from potlut.nn import LayerSpec, QuantSpec, calibrate, convert, layer_bits, quant_layers
from potlut.quant.iospot import IOSPoTQuantizer, UniformPoTQuantizer


def is_pot_or_zero(t: torch.Tensor) -> bool:
    m, _ = torch.frexp(t.double())
    return bool(((m == 0) | (m.abs() == 0.5)).all())


def test_convert_leaves_original_untouched_and_sets_bits():
    torch.manual_seed(0)
    model = build("resnet20", 10, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = convert(model, QuantSpec(bits=3))
    assert not any(isinstance(m, IOSPoTQuantizer) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    bits = layer_bits(q)
    names = list(bits)
    assert len(names) == 20  # 19 convs + fc
    assert bits[names[0]] == (8, 8) and bits[names[-1]] == (8, 8)
    assert all(bits[n] == (3, 3) for n in names[1:-1])
    first, last = quant_layers(q)[0][1], quant_layers(q)[-1][1]
    assert isinstance(first.weight_quant, UniformPoTQuantizer) and not first.weight_norm
    assert isinstance(last.act_quant, UniformPoTQuantizer)


def test_overrides_and_bad_specs():
    model = build("small_cnn", 10, 1)
    q = convert(model, QuantSpec(bits=4, overrides={"features.3": LayerSpec("iospot", 2, 5)}))
    assert layer_bits(q)["features.3"] == (2, 5)
    with pytest.raises(PotlutConfigError, match="unknown quantization scheme"):
        convert(model, QuantSpec(scheme="nope"))
    with pytest.raises(PotlutConfigError, match="2..8"):
        convert(model, QuantSpec(bits=9))
    with pytest.raises(PotlutConfigError, match="do not exist"):
        convert(model, QuantSpec(overrides={"nope": LayerSpec("iospot", 4, 4)}))


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_all_iospot_weights_and_activations_are_powers_of_two(bits):
    torch.manual_seed(bits)
    model = build("resnet20", 10, 3)
    q = convert(model, QuantSpec(bits=bits))
    x = torch.randn(8, 3, 32, 32)
    calibrate(q, x)
    seen = []

    def hook(mod, inp, out):
        seen.append(out.detach())

    for m in q.modules():
        if isinstance(m, IOSPoTQuantizer):
            m.register_forward_hook(hook)
    q.eval()(x)
    assert len(seen) == 2 * 18  # weight + input of the 18 middle convs
    for out in seen:
        assert is_pot_or_zero(out)
    for _, layer in quant_layers(q):
        for quantizer in (layer.weight_quant, layer.act_quant):
            assert is_pot_or_zero(quantizer.alpha().detach())
        if isinstance(layer.weight_quant, IOSPoTQuantizer):
            mags = torch.unique(layer.quantized_weight().detach().abs())
            assert mags.numel() <= 2 ** (bits - 1)



def test_weight_normalization_per_channel_for_convolutions_per_layer_for_the_classifier():
    """Default ("auto") at 4 bits: each conv filter normalized alone (zero mean, unit std),
    the classifier (no BatchNorm after it) as one tensor; at 3 bits, and with
    ``weight_norm="layer"`` at any width, METHODS §1.1 per layer."""
    torch.manual_seed(0)
    fp = build("resnet20", 10, 3)
    for spec, per_channel in ((QuantSpec(bits=4), True), (QuantSpec(bits=3), False),
                              (QuantSpec(bits=3, weight_norm="channel"), True),
                              (QuantSpec(bits=4, weight_norm="layer"), False)):
        layers = [m for _, m in quant_layers(convert(fp, spec)) if m.weight_norm]
        convs = [m for m in layers if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 18  # the first conv is 8-bit fixed point, not normalized
        for m in convs:
            flat = m.normalized_weight().detach().reshape(m.out_channels, -1).double()
            assert m.wn_per_channel is per_channel
            raw = m.weight.detach().reshape(m.out_channels, -1).double()
            dim = (1,) if per_channel else (0, 1)
            mean, std = flat.mean(dim), flat.std(dim)
            sd = raw.std(dim)
            assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-6)
            assert torch.allclose(std, sd / (sd + 1e-5), atol=1e-6)  # (w - mean) / (std + eps)
    nn = torch.nn
    mlp = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 32), nn.ReLU(),
                        nn.Linear(32, 10))
    linears = [m for _, m in quant_layers(convert(mlp, QuantSpec()))
               if m.weight_norm and isinstance(m, nn.Linear)]
    assert linears and not any(m.wn_per_channel for m in linears)
    with pytest.raises(PotlutConfigError, match="weight_norm"):
        convert(fp, QuantSpec(weight_norm="row"))
