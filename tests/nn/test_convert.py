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

