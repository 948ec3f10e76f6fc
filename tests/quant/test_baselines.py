"""The paper's baseline quantizers: level sets, hand-computed outputs, gradients, export.

Every expected number below was worked out by hand from the cited paper's equations
(the derivation is in the comment next to it).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from potlut.errors import PotlutConfigError
from potlut.nn import QuantSpec, calibrate, convert
from potlut.quant import registry
from potlut.quant.apot import APoTQuantizer, apot_levels
from potlut.quant.bmfloat import BMFloatQuantizer, minifloat_format
from potlut.quant.deepshift import DeepShiftActQuantizer, DeepShiftWeightQuantizer
from potlut.quant.lqnet import LQNetQuantizer
from potlut.quant.lsq import LSQPlusQuantizer
from potlut.quant.pact import DoReFaWeightQuantizer, PACTQuantizer, pact_levels

BASELINES = ["apot", "lqnet", "deepshift", "pact", "lsq", "bmfloat"]


def t(*vals: float) -> torch.Tensor:
    return torch.tensor(vals, dtype=torch.float32)


def close(a: torch.Tensor, b, tol: float = 1e-6) -> bool:
    return torch.allclose(a.double(), torch.as_tensor(b, dtype=torch.float64), atol=tol)


# -- APoT ----------------------------------------------------------------------------------

def test_apot_levels_3_and_4_bits():
    # 3-bit signed: B = 2, one term {0, 2^-1, 2^-2, 2^-3} / 2^-1
    assert close(apot_levels(3), [0, 0.25, 0.5, 1])
    # 4-bit signed: B = 3, terms {0, 1/2, 1/4, 1/16} + {0, 1/8}, divided by 5/8
    assert close(apot_levels(4), [0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0])
    # 4-bit unsigned: Eq. (5) with n = 2: {0,32,8,2} + {0,16,4,1} (in 64ths), / 48
    want = [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]
    assert close(apot_levels(4, signed=False), [v / 48 for v in want])
    # 3-bit unsigned is the same set as 4-bit signed magnitudes
    assert close(apot_levels(3, signed=False), apot_levels(4))
    assert len(apot_levels(6)) == 32 and len(apot_levels(7)) == 64
    with pytest.raises(PotlutConfigError):
        apot_levels(8)


def test_apot_forward_and_rcf_gradient():
    q = APoTQuantizer(4)
    with torch.no_grad():
        q.a.fill_(2.5)  # step alpha / 10 = 1/4: already 11 significant bits
    x = t(0.1875, -0.625, 1.125, 1.625, 3.75).requires_grad_()
    y = q(x)
    # x/alpha = .075, -.25, .45, .65, 1.5 -> levels .1, .3 (tie -> larger), .4, .6, 1
    assert y.tolist() == [0.25, -0.75, 1.0, 1.5, 2.5]
    y.sum().backward()
    # RCF: (q - x)/alpha inside = .025, -.05, -.05, -.05; sign(x) = 1 outside -> 0.875
    assert q.a.grad.item() == pytest.approx(0.875, abs=1e-6)
    assert close(x.grad, [1, 1, 1, 1, 0])


def test_real_steps_keep_11_significant_bits_and_levels_are_exact_multiples():
    # alpha 2 -> step 0.2 = 0.8 * 2^-2 -> round(0.8 * 2^11) = 1638 -> 1638 * 2^-13
    q = APoTQuantizer(4)
    with torch.no_grad():
        q.a.fill_(2.0)
    assert q.step().item() == 1638 * 2.0**-13 and q.alpha().item() == 10 * 1638 * 2.0**-13
    cb = q.export(t(0.3, -1.9)).codebook
    assert (cb / (1638 * 2.0**-13)).tolist() == [0, 1, 2, 3, 4, 6, 8, 10]
    p = PACTQuantizer(4)  # m = 7: step 3 / 7 = 0.428571... -> 1755 * 2^-12
    with torch.no_grad():
        p.a.fill_(3.0)
    assert p.step().item() == 1755 * 2.0**-12
    assert (p.export(t(1.0)).codebook / (1755 * 2.0**-12)).tolist() == list(range(8))
    x = t(0.3, 2.0, -5.0)  # the forward's values are the exported codebook's, sign included
    assert p(x).tolist() == p.export(x).values().tolist()


def test_apot_calibration_minimizes_mse_and_export_matches():
    torch.manual_seed(0)
    x = torch.randn(4096)
    q = APoTQuantizer(4)
    q.calibrate_from(x)
    a = q.a.item()

    def err(alpha: float) -> float:
        probe = APoTQuantizer(4)
        with torch.no_grad():
            probe.a.fill_(alpha)
            return float(((probe(x) - x) ** 2).mean())

    assert err(a) <= err(a * 1.1) and err(a) <= err(a * 0.9)
    assert 2.0 < a < 3.5  # a unit Gaussian clips near 2.5 sigma at 4 bits
    e = q.export(x)
    assert len(e.codebook) == 8 and e.exponent is None
    assert np.allclose(e.values(), q(x).detach().double().numpy(), atol=1e-6)


# -- PACT / DoReFa -------------------------------------------------------------------------

def test_pact_and_dorefa_levels():
    assert close(pact_levels(3, signed=False), [j / 7 for j in range(8)])
    assert close(pact_levels(4, signed=False), [j / 15 for j in range(16)])
    assert close(pact_levels(3), [0, 1 / 3, 2 / 3, 1])  # signed: 2 magnitude bits
    assert close(pact_levels(4), [j / 7 for j in range(8)])
    # DoReFa Eq. 9: values (2c - m)/m, magnitudes odd multiples of 1/m
    assert close(DoReFaWeightQuantizer(3).levels(), [1 / 7, 3 / 7, 5 / 7, 1])
    assert close(DoReFaWeightQuantizer(4).levels(), [k / 15 for k in range(1, 16, 2)])


def test_pact_forward_and_alpha_gradient():
    q = PACTQuantizer(3, signed=False)
    with torch.no_grad():
        q.a.fill_(7.0)  # step alpha / (2^3 - 1) = 1
    x = t(-3.0, 1.5, 2.5, 3.49, 10.0).requires_grad_()
    y = q(x)
    # clip to [0, 7], round to nearest with ties up (the engine's thresholds; the paper
    # rounds half to even): 0, 2, 3, 3, 7
    assert y.tolist() == [0, 2, 3, 3, 7]
    y.sum().backward()
    assert q.a.grad.item() == 1.0  # PACT Eq. 3: 1 only where x >= alpha
    assert close(x.grad, [0, 1, 1, 1, 0])


def test_dorefa_forward_by_hand():
    w = t(0.0, 0.05, -0.1, 0.2).requires_grad_()
    y = DoReFaWeightQuantizer(2)(w)
    # r = tanh(w) / (2 tanh(.2)) + .5 = .5, .6266, .2475, 1; *3 -> round 2, 2, 1, 3;
    # 2c - 3 = 1, 1, -1, 3; times the step max|w| / 3 = .0667 on 11 bits: 1092 * 2^-14
    assert y.tolist() == [v * 1092 * 2.0**-14 for v in (1, 1, -1, 3)]
    assert abs(1092 * 2.0**-14 - 0.2 / 3) < 2**-12 * 0.2 / 3
    y.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


# -- LSQ+ ----------------------------------------------------------------------------------

def test_lsq_levels_and_weight_init():
    assert close(LSQPlusQuantizer(3, "weight").levels(), range(-4, 4))
    assert close(LSQPlusQuantizer(4, "weight").levels(), range(-8, 8))
    assert close(LSQPlusQuantizer(3, "act").levels(), range(0, 8))
    assert close(LSQPlusQuantizer(4, "act").levels(), range(0, 16))
    q = LSQPlusQuantizer(4, "weight")
    q.calibrate_from(t(1, 2, 3, 4, 5))
    # mu = 3, sigma = sqrt(2.5): s = (3 + 3 sqrt(2.5)) / 8
    assert q.s.item() == pytest.approx((3 + 3 * math.sqrt(2.5)) / 8, rel=1e-6)


def test_lsq_weight_forward_and_scaled_step_gradient():
    q = LSQPlusQuantizer(3, "weight")
    with torch.no_grad():
        q.s.fill_(0.5)
    x = t(0.3, -0.74, 1.6, -3.0).requires_grad_()
    y = q(x)
    # v = .6, -1.48, 3.2 -> 3, -6 -> -4; round: 1, -1, 3, -4
    assert close(y, [0.5, -0.5, 1.5, -2.0])
    y.sum().backward()
    # ds: (1 - .6) + (-1 + 1.48) + 3 - 4 = -0.12, times g = 1/sqrt(4 * 3)
    assert q.s.grad.item() == pytest.approx(-0.12 / math.sqrt(12), abs=1e-6)
    assert q.beta.grad is None  # weights are symmetric: no offset
    assert close(x.grad, [1, 1, 0, 0])


def test_lsq_act_offset_forward_and_gradient():
    q = LSQPlusQuantizer(3, "act")
    with torch.no_grad():
        q.s.fill_(1.0)
        q.beta.fill_(-0.5)
    x = t(-1.0, 0.2, 3.7, 9.0).reshape(1, 4).requires_grad_()
    y = q(x)
    # v = x + .5 = -.5, .7, 4.2, 9.5 -> clamp [0, 7] -> round 0, 1, 4, 7; q = v - .5
    assert close(y, [[-0.5, 0.5, 3.5, 6.5]])
    y.sum().backward()
    g = 1 / math.sqrt(4 * 7)
    assert q.beta.grad.item() == pytest.approx(2 * g, abs=1e-6)  # 1 below and 1 above
    # ds: 0 (below: n = 0) + (1 - .7) + (4 - 4.2) + 7 (above: p)
    assert q.s.grad.item() == pytest.approx((0.3 - 0.2 + 7) * g, abs=1e-5)
    e = q.export(x)
    assert np.allclose(e.values(), y.detach().double().numpy(), atol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_lsq_signed_acts_get_the_same_bit_budget_as_every_scheme(bits):
    """Signed mode (the default): post-ReLU activations land on 2^(b-1) magnitudes, as
    IOS-PoT's do, not LSQ+'s 2^b; the offset stays 0. Unsigned mode: 2^b levels."""
    x = torch.linspace(0, 6, 601).reshape(1, -1)  # post-ReLU data
    signed = registry.make("lsq", bits, "act", True)
    signed.calibrate_from(x)
    codes = signed.codes(x)
    assert (signed.n, signed.p) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert sorted(codes.unique().tolist()) == list(range(2 ** (bits - 1)))
    assert not signed.beta.requires_grad and signed.beta.item() == 0.0
    iospot = registry.make("iospot", bits, "act", True)
    assert len(signed.codes(x).unique()) == len(iospot.levels()) == 2 ** (bits - 1)
    e = signed.export(x)
    assert e.codes.max() == 2 ** (bits - 1) - 1 and not e.negative.any()
    unsigned = registry.make("lsq", bits, "act", False)
    unsigned.calibrate_from(x)
    assert len(unsigned.codes(x).unique()) == 2**bits and unsigned.beta.requires_grad


# -- DeepShift-Q ---------------------------------------------------------------------------

def test_deepshift_levels():
    assert close(DeepShiftWeightQuantizer(3).levels(), [0, 0.25, 0.5, 1])
    assert close(DeepShiftWeightQuantizer(4).levels(), [0] + [2.0**p for p in range(-6, 1)])


def test_deepshift_log_domain_rounding_and_ste():
    q = DeepShiftWeightQuantizer(4)
    x = t(0.7, 0.72, -0.3, 0.01, 0.012, 5.0).requires_grad_()
    y = q(x)
    # log2: -.515 -> -1; -.474 -> 0 (linear nearest would give .5); -1.74 -> -2;
    # -6.64 -> -7 < -6 -> zero; -6.38 -> -6; 2.32 -> clamped to 0
    assert close(y, [0.5, 1.0, -0.25, 0.0, 2.0**-6, 1.0])
    y.sum().backward()
    assert close(x.grad, [1] * 6)
    e = q.export(x.detach())
    assert list(e.codes) == [6, 7, 5, 0, 1, 7] and e.exponent == 0
    assert np.allclose(e.values(), y.detach().double().numpy())


def test_deepshift_activations_are_8_bit_whatever_bits_asks():
    act = registry.make("deepshift", 4, "act", True)
    assert isinstance(act, DeepShiftActQuantizer) and act.bits == 8
    assert registry.make("deepshift", 3, "weight", True).bits == 3
    assert not registry.get("deepshift").weight_norm


# -- LQ-Net --------------------------------------------------------------------------------

def _with_basis(q: LQNetQuantizer, *v: float) -> LQNetQuantizer:
    q.basis.copy_(t(*v))
    return q


def test_lqnet_levels_are_basis_combinations():
    # weights, {-1,+1}^3 with v = (.1, .3, .9)
    q = _with_basis(LQNetQuantizer(3, "weight"), 0.1, 0.3, 0.9)
    assert close(q.levels(), [-1.3, -1.1, -0.7, -0.5, 0.5, 0.7, 1.1, 1.3])
    # the initial basis 2^i at 4 bits: the odd integers -15..15
    assert close(LQNetQuantizer(4, "weight").levels(), range(-15, 16, 2))
    # activations, {0,1}^3 with v = (.5, 1, 2): multiples of .5 up to 3.5
    q = _with_basis(LQNetQuantizer(3, "act", signed=False), 0.5, 1.0, 2.0)
    assert close(q.levels(), [k / 2 for k in range(8)])
    # signed 4-bit activations: sign + 3-bit {0,1} basis
    q = _with_basis(LQNetQuantizer(4, "act", signed=True), 0.5, 1.0, 2.0)
    assert close(q.levels(), [k / 2 for k in range(8)])


def test_lqnet_forward_by_hand():
    q = _with_basis(LQNetQuantizer(3, "weight"), 0.1, 0.3, 0.9).eval()
    x = t(0.62, -1.0, 2.0, 0.0)
    # nearest of the 8 levels; 0 sits on the midpoint of -.5 and .5 -> the larger one
    assert close(q(x), [0.7, -1.1, 1.3, 0.5])
    e = q.export(x)
    assert close(torch.tensor(e.codebook), [0.5, 0.7, 1.1, 1.3])
    assert list(e.codes) == [1, 2, 3, 0] and list(e.negative) == [False, True, False, False]


def test_lqnet_qem_update_of_the_basis():
    # data drawn from the levels of v* = (.2, .5); start v = (.25, .45) gives the same
    # encodings, so one least-squares step recovers v* exactly (Algorithm 1)
    x = t(-0.7, -0.3, 0.3, 0.7, 0.3, -0.3)
    q = _with_basis(LQNetQuantizer(2, "weight"), 0.25, 0.45)
    q.qem_step(x, momentum=0.0)
    assert close(q.basis, [0.2, 0.5])
    # in training, each forward moves v by the running average 0.9 v + 0.1 v*
    q = _with_basis(LQNetQuantizer(2, "weight"), 0.25, 0.45).train()
    xg = x.clone().requires_grad_()
    q(xg).sum().backward()
    assert close(q.basis, [0.9 * 0.25 + 0.1 * 0.2, 0.9 * 0.45 + 0.1 * 0.5])
    assert close(xg.grad, [1] * 6)  # STE
    # side computations (no autograd graph) leave the basis alone
    before = q.basis.clone()
    q(x)
    assert torch.equal(q.basis, before)


def test_lqnet_weight_basis_per_output_channel():
    # two output channels whose weights are the levels of v = (.2, .5) and of 10x that:
    # QEM fits each channel its own basis (the authors' [nbit, num_filters])
    w = torch.stack([t(-0.7, -0.3, 0.3, 0.7), 10 * t(-0.7, -0.3, 0.3, 0.7)]).reshape(2, 1, 2, 2)
    q = LQNetQuantizer(2, "weight")
    q.calibrate_from(w)
    assert q.basis.shape == (2, 2) and q.levels().shape == (2, 4)
    assert close(q.basis, [[0.2, 0.5], [2.0, 5.0]], tol=1e-4)
    assert q.side_bits(tuple(w.shape)) == 2 * 2 * 32  # the stored basis: 2 x 2 FP32 values
    assert close(q.eval()(w), w, tol=1e-4)
    e = q.export(w)  # one codebook: the union of both channels' magnitudes
    assert close(torch.tensor(e.codebook), [0.3, 0.7, 3.0, 7.0], tol=1e-4)
    assert np.allclose(e.values(), w.double().numpy(), atol=1e-4)
    # a checkpoint with per-channel bases loads into a fresh quantizer
    fresh = LQNetQuantizer(2, "weight")
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh.basis, q.basis)


def test_lqnet_gradients_as_the_authors_code():
    # weights: plain STE, also outside the level range; activations: zero above the top
    w = _with_basis(LQNetQuantizer(2, "weight"), 0.2, 0.5).eval()
    x = t(-3.0, 0.1, 3.0).requires_grad_()
    w(x).sum().backward()
    assert close(x.grad, [1, 1, 1])
    a = _with_basis(LQNetQuantizer(2, "act", signed=False), 0.5, 1.0).eval()  # top 1.5
    x = t(0.2, 1.4, 1.6, 4.0).requires_grad_()
    a(x).sum().backward()
    assert close(x.grad, [1, 1, 0, 0])


# -- BM-float ------------------------------------------------------------------------------

def test_bmfloat_levels():
    assert minifloat_format(3) == (1, 1) and minifloat_format(4) == (2, 1)
    # (e, m) = (1, 1): subnormal {0, .5}, normal {1, 1.5}
    assert close(BMFloatQuantizer(3).levels(), [0, 0.5, 1, 1.5])
    # (2, 1), bias 3: subnormal {0, 1/8}; 2^-2 {1, 1.5}; 2^-1 {1, 1.5}; 2^0 {1, 1.5}
    assert close(BMFloatQuantizer(4).levels(), [0, 0.125, 0.25, 0.375, 0.5, 0.75, 1, 1.5])


def test_bmfloat_formats_are_the_papers_forward_ones():
    # BM8 is (2, 5) forward ((4, 3) is its gradient format), BM6 (2, 3)
    assert minifloat_format(8) == (2, 5) and minifloat_format(6) == (2, 3)
    assert minifloat_format(7, signed=False) == (2, 5)  # the sign bit spent on mantissa


def test_bmfloat_weight_shares_an_exponent_per_tile_by_hand():
    q = BMFloatQuantizer(4, tile=2)
    x = t(0.3, -1.0, 2.9, 0.05, 0.1, 0.07, -0.02, 0.0).reshape(2, 4).requires_grad_()
    y = q(x)
    # tile cols 0-1: max 1.0 -> exponent 0: .3 .1 .07 -> .25 .125 .125, -1 -> -1
    # tile cols 2-3: max 2.9 -> exponent 1, x/2 = 1.45 .025 -.01 0 -> 1.5 0 0 0
    want = [[0.25, -1.0, 3.0, 0.0], [0.125, 0.125, 0.0, 0.0]]
    assert close(y, want)
    assert close(q.block_exponents(x), [[0, 1]])
    y.sum().backward()
    assert close(x.grad, [[1] * 4] * 2)  # STE, no learnable parameter
    e = q.export(x)
    assert e.codebook[0] == 0 and len(e.codebook) <= 8 * 2
    assert np.allclose(e.values(), np.array(want))
    # 8-bit shared exponents, 48 x 48 tiles of the [C_out, C_in k k] operand: 64 x 144 -> 2 x 3
    assert BMFloatQuantizer(4).side_bits((64, 16, 3, 3)) == 2 * 3 * 8
    assert BMFloatQuantizer(4).side_bits((8, 16, 3, 3)) == 1 * 3 * 8


def test_bmfloat_activation_shares_an_exponent_per_sample():
    q = registry.make("bmfloat", 4, "act", True)
    x = t(0.3, 1.0, 2.9, 0.01, -0.02, 0.04).reshape(2, 3)
    # sample 0: max 2.9 -> exponent 1: .15 .5 1.45 -> .125 .5 1.5 (times 2)
    # sample 1: max .04 -> exponent -5, x*32 = .32 -.64 1.28 -> .375 -.75 1.5 (times 1/32)
    assert close(q.block_exponents(x), [1, -5])
    assert close(q(x), [[0.25, 1.0, 3.0], [0.375 / 32, -0.75 / 32, 1.5 / 32]])
    # one sample's result does not depend on the other samples of its batch
    assert torch.equal(q(x[1:]), q(x)[1:])


# -- every scheme through the registry and convert -----------------------------------------

@pytest.mark.parametrize("scheme", BASELINES)
def test_scheme_converts_calibrates_trains_and_exports(scheme):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 16, 3),
    )
    q = convert(model, QuantSpec(scheme=scheme, bits=4))
    x = torch.randn(16, 1, 4, 4)
    calibrate(q, x)
    mid = q[2]
    assert mid.weight_quant.scheme == scheme and mid.bits_w == 4
    assert mid.bits_a == (8 if scheme == "deepshift" else 4)
    q.train()
    loss = q(x).square().mean()
    loss.backward()
    assert mid.weight.grad is not None and mid.weight.grad.abs().sum() > 0
    for p in mid.weight_quant.parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all()
    for p in mid.act_quant.parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0
    e = mid.weight_quant.export(mid.normalized_weight())
    # LQ-Net: the union of 8 channels' 2^(4-1) magnitudes; the others one set of <= 32
    assert e.codes.shape == mid.weight.shape
    assert len(e.codebook) <= (8 * 8 if scheme == "lqnet" else 32)
    assert np.allclose(e.values(), mid.quantized_weight().detach().double().numpy(), atol=1e-5)


def test_registry_lists_every_baseline():
    assert set(BASELINES) <= set(registry.names())


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("scheme", ["iospot", "apot", "lqnet", "pact", "lsq", "bmfloat"])
def test_same_activation_bit_budget_for_every_scheme_of_a_row(scheme, bits):
    """Signed activations (the default): a sign bit and b-1 magnitude bits, so post-ReLU
    data land on at most 2^(b-1) values under every scheme; unsigned: at most 2^b."""
    x = torch.linspace(0, 4, 4001).reshape(1, -1)  # one sample of post-ReLU data
    for signed, budget in ((True, 2 ** (bits - 1)), (False, 2**bits)):
        q = registry.make(scheme, bits, "act", signed)
        q.calibrate_from(x)
        used = len(q.eval()(x).unique())
        assert 2 ** (bits - 1) // 2 < used <= budget, (signed, used)
