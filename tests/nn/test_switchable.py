"""Switchable precision: shared weights, per-width quantizers and BatchNorm, set_bits."""

import pytest
import torch

from potlut.data import load
from potlut.errors import PotlutConfigError
from potlut.models import build
from potlut.nn import QuantSpec, layer_bits, quant_layers
from potlut.nn.switchable import (
    SwitchableBatchNorm2d,
    SwitchableQuantizer,
    parse_widths,
    quantize_switchable,
)
from potlut.quant.iospot import pot_levels, uniform_levels


@pytest.fixture(scope="module")
def switchable():
    torch.manual_seed(0)
    bundle = load("digits")
    model = build("small_cnn", 10, 1)
    return quantize_switchable(model, QuantSpec(), (2, 3, 4, 8), bundle.calibration_batch())


def test_set_bits_switches_codes_to_that_widths_levels(switchable):
    sm = switchable
    middle = ["features.3", "features.6"]
    seen = {}
    for b in sm.widths:
        sm.set_bits(b)
        assert layer_bits(sm.net) == {"features.0": (8, 8), "features.3": (b, b),
                                      "features.6": (b, b), "fc": (8, 8)}
        for name in middle:
            layer = sm.net.get_submodule(name)
            w = layer.quantized_weight().detach().double()
            alpha = float(layer.weight_quant.current.alpha().detach())
            # IOS-PoT: {0} and 2^(b-1)-1 powers of two up to alpha; 8 bits: fixed point j/128
            levels = pot_levels(b) if b <= 5 else uniform_levels(b)
            allowed = levels * alpha
            mags = torch.unique(w.abs())
            assert torch.isin(mags, allowed).all(), (b, name)
            assert len(mags) <= 2 ** (b - 1)
            seen[b, name] = w
    # at 2 bits every weight is 0 or +-alpha, at 8 bits (fixed point) the codes use many levels
    assert len(torch.unique(seen[2, "features.6"].abs())) == 2
    assert len(torch.unique(seen[8, "features.6"].abs())) >= 64
    assert sm.set_bits(8).net.get_submodule("features.6").weight_quant.scheme == "fixedpoint"
    assert sm.set_bits(4).net.get_submodule("features.6").weight_quant.scheme == "iospot"
    assert not torch.equal(seen[3, "features.6"], seen[4, "features.6"])
    # the weights themselves are shared: one parameter for every width
    assert sum(p.numel() for n, p in sm.named_parameters() if n.endswith("weight")
               and "branches" not in n) == 16 * 9 + 32 * 16 * 9 + 64 * 32 * 9 + 640


def test_shared_and_per_width_modules(switchable):
    sm = switchable
    layers = dict(quant_layers(sm.net))
    # 8-bit ends: the weight quantizers are shared, the first layer's input too
    assert not isinstance(layers["features.0"].weight_quant, SwitchableQuantizer)
    assert not isinstance(layers["features.0"].act_quant, SwitchableQuantizer)
    assert not isinstance(layers["fc"].weight_quant, SwitchableQuantizer)
    assert isinstance(layers["fc"].act_quant, SwitchableQuantizer)
    bns = [m for m in sm.net.modules() if isinstance(m, SwitchableBatchNorm2d)]
    assert len(bns) == 3 and all(list(m.branches) == ["2", "3", "4", "8"] for m in bns)
    # calibration gave each width its own BN statistics (activations differ per width)
    bn = sm.net.get_submodule("features.7")
    assert not torch.equal(bn.branches["2"].running_var, bn.branches["8"].running_var)
    # each width has its own clipping scale start
    exps = {b: layers["features.6"].act_quant.branches[str(b)].exponent() for b in sm.widths}
    assert len(set(exps.values())) >= 2


def test_at_bits_is_plain_and_equal(switchable):
    sm = switchable.eval()
    x = load("digits").calibration_batch(32)
    for b in sm.widths:
        plain = sm.at_bits(b).eval()
        assert not any(isinstance(m, (SwitchableQuantizer, SwitchableBatchNorm2d))
                       for m in plain.modules())
        sm.set_bits(b)
        assert torch.equal(plain(x), sm(x))
    assert sm.bits == 8


def test_swap_runs_units_at_another_width_and_freezes_their_stats(switchable):
    sm = switchable
    x = load("digits").calibration_batch(64)
    units = sm.units()
    assert len(units) == 4  # one per quantized layer, each with the BN after it
    sm.train()
    sm.set_bits(2, swap={1: 8})
    q = sm.net.get_submodule("features.3").weight_quant
    assert q.bits == 8 and sm.net.get_submodule("features.6").weight_quant.bits == 2
    bn8 = sm.net.get_submodule("features.4").branches["8"]
    before = bn8.running_mean.clone()
    sm(x)
    assert torch.equal(bn8.running_mean, before)  # swapped-in teacher BN: stats untouched
    sm.set_bits(8)
    sm.eval()


def test_widths_parsing_and_errors(switchable):
    assert parse_widths("8,2, 4,3") == (2, 3, 4, 8)
    assert parse_widths(4) == (4,)
    with pytest.raises(PotlutConfigError, match="integers"):
        parse_widths("2,x")
    with pytest.raises(PotlutConfigError, match="bits must be"):
        parse_widths("1,4")
    with pytest.raises(PotlutConfigError, match="not one of"):
        switchable.set_bits(5)
