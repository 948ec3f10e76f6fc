"""IOS-PoT numerics (METHODS §1): levels, projection, power-of-two values and scales, gradients."""

import pytest
import torch

from potlut.errors import PotlutConfigError
from potlut.quant.iospot import (
    IOSPoTQuantizer,
    UniformPoTQuantizer,
    best_pot_exponent,
    pot_levels,
    pot_scale,
)


def is_pot_or_zero(t: torch.Tensor) -> bool:
    """Exactly 0 or ±2^e: frexp's mantissa of a power of two is exactly ±0.5."""
    m, _ = torch.frexp(t.double())
    return bool(((m == 0) | (m.abs() == 0.5)).all())


def test_levels_match_methods_examples():
    assert pot_levels(3).tolist() == [0.0, 0.25, 0.5, 1.0]
    assert pot_levels(4).tolist() == [0.0] + [2.0**-j for j in range(6, -1, -1)]
    assert pot_levels(2).tolist() == [0.0, 1.0]
    assert pot_levels(8).numel() == 128
    assert pot_levels(8)[1].item() == 2.0**-126
    assert pot_levels(3, signed=False).tolist() == [0.0] + [2.0**-j for j in range(6, -1, -1)]


@pytest.mark.parametrize("bad", [1, 9, 0, -3, 4.5, "4"])
def test_bits_out_of_range_is_a_user_error(bad):
    with pytest.raises(PotlutConfigError, match="2..8"):
        IOSPoTQuantizer(bad)


def test_projection_nearest_with_ties_to_larger():
    q = IOSPoTQuantizer(3)
    with torch.no_grad():
        q.a.fill_(1.0)
    x = torch.tensor([0.124, 0.125, 0.374, 0.375, 0.749, 0.75, 0.9, 1.7, -0.375, -0.1])
    assert q(x).tolist() == [0.0, 0.25, 0.25, 0.5, 0.5, 1.0, 1.0, 1.0, -0.5, 0.0]


@pytest.mark.parametrize("bits", range(2, 9))
def test_every_value_is_zero_or_power_of_two_and_magnitudes_bounded(bits):
    torch.manual_seed(bits)
    q = IOSPoTQuantizer(bits)
    x = torch.randn(20000) * 3
    q.calibrate_from(x)
    y = q(x)
    assert is_pot_or_zero(y)
    assert is_pot_or_zero(q.alpha().detach())
    assert torch.unique(y.abs()).numel() <= 2 ** (bits - 1)
    e = q.export(x)
    assert e.exponent == int(torch.log2(q.alpha()).item())
    assert torch.equal(torch.from_numpy(e.values()).float(), y)


def test_pot_scale_is_power_of_two_with_ste_gradient():
    a = torch.tensor(2.5, requires_grad=True)
    alpha = pot_scale(a)
    assert alpha.item() == 2.0  # 2^round(log2 2.5) = 2^round(1.32)
    alpha.backward()
    assert a.grad.item() == pytest.approx(2.0 / 2.5)  # d alpha/d a = alpha / a
    assert pot_scale(torch.tensor(-3.0)).item() == 4.0  # |a| is used
    assert pot_scale(torch.tensor(0.0)).item() == 2.0**-24  # floor, no inf


def test_gradients_match_hand_computed_values():
    """x=[-3,-0.3,0.1,0.7,2.5], alpha=2, 3 bits -> q=[-2,-0.5,0,0.5,2] (METHODS §1.4-5)."""
    q = IOSPoTQuantizer(3)
    with torch.no_grad():
        q.a.fill_(2.5)  # alpha = 2, d alpha/d a = 0.8
    x = torch.tensor([-3.0, -0.3, 0.1, 0.7, 2.5], requires_grad=True)
    y = q(x)
    assert y.tolist() == [-2.0, -0.5, 0.0, 0.5, 2.0]
    y.sum().backward()
    # STE: identity inside |x| <= alpha, zero outside
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    # dq/dalpha: sign(x) outside; (q - x)/alpha inside -> -1 - 0.1 - 0.05 - 0.1 + 1 = -0.25
    assert q.a.grad.item() == pytest.approx(-0.25 * 0.8)


def test_unsigned_activations_use_all_bits_and_drop_negatives():
    q = IOSPoTQuantizer(3, signed=False)
    with torch.no_grad():
        q.a.fill_(1.0)
    x = torch.tensor([-0.5, 2.0**-6, 0.3, 0.5, 3.0], requires_grad=True)
    y = q(x)
    assert y.tolist() == [0.0, 2.0**-6, 0.25, 0.5, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_uniform_8bit_step_is_power_of_two():
    q = UniformPoTQuantizer(8)
    with torch.no_grad():
        q.a.fill_(4.0)
    x = torch.tensor([0.015, 0.015625, 0.03, -1.0, 5.0])  # half a step is a tie
    step = 4.0 / 128
    assert q(x).tolist() == [0.0, step, step, -1.0, 127 * step]
    e = q.export(x)
    assert e.codes.tolist() == [0, 1, 1, 32, 127]
    assert e.negative.tolist() == [False, False, False, True, False]


def test_mse_start_picks_the_best_power_of_two():
    torch.manual_seed(0)
    x = torch.randn(50000)
    lv = pot_levels(3)
    s = best_pot_exponent(x, lv)

    def mse(exp):
        q = IOSPoTQuantizer(3)
        with torch.no_grad():
            q.a.fill_(2.0**exp)
        return float(((q(x) - x) ** 2).mean().detach())

    assert mse(s) < mse(s - 1) and mse(s) < mse(s + 1)
    assert s == 1  # for N(0,1) at 3 bits: levels {0, .5, 1, 2}


@pytest.mark.parametrize("cls", [IOSPoTQuantizer, UniformPoTQuantizer])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_equals_level_table_projection(cls, bits, signed, dtype):
    """The closed-form forward and backward equal the generic level-table ones exactly."""
    from potlut.quant.iospot import _FakeQuant

    torch.manual_seed(bits)
    q = cls(bits, signed=signed)
    with torch.no_grad():
        q.a.fill_(1.5)  # alpha = 2
    lv = q.levels()
    mids = (lv[1:] + lv[:-1]) / 2
    ties = torch.cat([mids, -mids, lv, -lv]) * 2
    x = torch.cat([torch.randn(5000) * 2, ties, torch.tensor([0.0, 9.0, -9.0])]).to(dtype)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    a2 = torch.tensor(2.0, dtype=dtype, requires_grad=True)
    y1 = q.fake_quant(x1, q.alpha())
    y2 = _FakeQuant.apply(x2, a2, q._levels, q._mids, signed)
    assert torch.equal(y1, y2)
    g = torch.randn_like(x)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    assert torch.equal(x1.grad, x2.grad)
    # float32 (torch) vs float64 (fused kernel) summation order
    assert q.a.grad.item() == pytest.approx(a2.grad.item() * 2.0 / 1.5, rel=1e-5)


def test_fused_kernels_keep_the_torch_thread_count():
    """Starting numba's OpenMP layer resets the shared runtime; a fresh interpreter shows it."""
    import subprocess
    import sys

    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from potlut.quant.iospot import IOSPoTQuantizer, UniformPoTQuantizer\n"
        "x = torch.randn(4, 3, 32, 32, requires_grad=True)\n"
        "UniformPoTQuantizer(8)(x)\n"
        "IOSPoTQuantizer(4)(x).sum().backward()\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
