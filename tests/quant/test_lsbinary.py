"""LS-1 / LS-2 / LS-T (Pouransari et al. 2020): hand-computed fits and brute-force optimality."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from potlut.quant import registry
from potlut.quant.lsbinary import LSQuantizer, ls1_fit, ls2_fit, lst_fit


def t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


def test_ls1_alpha_is_mean_abs():
    # (1 + 2 + 3 + 6) / 4 = 3
    assert ls1_fit(t(1, 2, 3, 6)).tolist() == [3.0]
    q = LSQuantizer("ls1", "weight")
    assert q.bits == 1
    assert q(t(1, -2, 3, -6)).tolist() == [3.0, -3.0, 3.0, -3.0]


def test_ls2_split_by_hand():
    # |x| = 1, 2, 10, 11: gains S_lo^2/i + S_hi^2/(n-i) = 1 + 23^2/3 = 177.3,
    # 3^2/2 + 21^2/2 = 225, 13^2/3 + 11^2 = 177.3 -> split after 2: means 1.5 and 10.5
    assert ls2_fit(t(1, 2, 10, 11)).tolist() == [1.5, 10.5]
    q = LSQuantizer("ls2", "weight")
    assert q.bits == 2
    # v1 = 6, v2 = 4.5: every value is ±(v1 - v2) or ±(v1 + v2)
    assert q(t(-1, 2, -10, 11)).tolist() == [-1.5, 1.5, -10.5, 10.5]
    e = q.export(t(-1, 2, -10, 11))
    assert e.codebook.tolist() == [1.5, 10.5] and e.codes.tolist() == [0, 0, 1, 1]
    assert e.negative.tolist() == [True, False, True, False]


def _sse_two_means(x: np.ndarray, mask: np.ndarray) -> float:
    err = 0.0
    for part in (x[mask], x[~mask]):
        if part.size:
            err += float(((part - part.mean()) ** 2).sum())
    return err


@pytest.mark.parametrize("seed", range(20))
def test_ls2_is_least_squares_by_brute_force(seed):
    """Over every assignment of the n magnitudes to the two levels (2^n, not only splits of
    the sorted order), none has a smaller squared error than the LS-2 fit."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(rng.integers(2, 10))) * rng.uniform(0.1, 3)
    a = np.abs(x)
    best = min(_sse_two_means(a, np.array(m, bool))
               for m in itertools.product((0, 1), repeat=a.size))
    lo, hi = ls2_fit(torch.tensor(a)).tolist()
    fit = float(np.minimum((a - lo) ** 2, (a - hi) ** 2).sum())
    assert fit == pytest.approx(best, rel=1e-12, abs=1e-12)
    # the quantizer's own output reaches it: x ~ sign(x) * level
    q = LSQuantizer("ls2", "weight")
    y = q(torch.tensor(x)).double().numpy()
    assert float(((y - x) ** 2).sum()) == pytest.approx(best, rel=1e-5, abs=1e-9)


def test_lst_threshold_by_hand():
    # sorted |x| = 4, 3, 0.5, 0.1: S_k^2 / k = 16, 24.5, 18.75, 14.44 -> k = 2, alpha 3.5,
    # threshold midway between 3 and 0.5
    alpha, thr = lst_fit(t(0.5, 4, 0.1, 3))
    assert (alpha, thr) == (3.5, 1.75)
    q = LSQuantizer("lst", "weight")
    assert q(t(0.5, -4, 0.1, 3)).tolist() == [0.0, -3.5, 0.0, 3.5]


@pytest.mark.parametrize("seed", range(20))
def test_lst_threshold_is_optimal_by_brute_force(seed):
    """Every support (2^n subsets kept as ±alpha with alpha least-squares for it): none
    beats the LS-T threshold's error."""
    rng = np.random.default_rng(100 + seed)
    x = rng.standard_normal(int(rng.integers(1, 10)))
    a = np.abs(x)
    best = float((a**2).sum())
    for m in itertools.product((0, 1), repeat=a.size):
        m = np.array(m, bool)
        if m.any():
            alpha = a[m].mean()
            best = min(best, float(((a[m] - alpha) ** 2).sum() + (a[~m] ** 2).sum()))
    alpha, thr = lst_fit(torch.tensor(a))
    err = float(np.where(a > thr, (a - alpha) ** 2, a**2).sum())
    assert err == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_activation_levels_keep_zero_and_bits():
    # LS-1 activations: {0, alpha}, alpha = mean of the non-zero |x| = (1 + 2 + 6) / 3 = 3
    q = LSQuantizer("ls1", "act", signed=False)
    q.calibrate_from(t(0, 1, 2, 6, 0))
    assert q.levels().tolist() == [0.0, 3.0] and q.bits == 1
    q.eval()
    # nearest level: 1 < 1.5 -> 0; 2 -> 3; negative -> 0 (unsigned)
    assert q(t(1, 2, 6, -4)).tolist() == [0.0, 3.0, 3.0, 0.0]
    e = q.export(t(0, 1, 2, 6))
    assert e.codebook.tolist() == [0.0, 3.0] and e.codes.tolist() == [0, 0, 1, 1]
    # LS-2 activations: {0} + the LS-2 levels of the non-zero |x| (1, 2, 10, 11 -> 1.5, 10.5)
    q2 = LSQuantizer("ls2", "act", signed=True)
    q2.calibrate_from(t(0, -1, 2, 0, 10, -11))
    assert q2.levels().tolist() == [0.0, 1.5, 10.5]
    assert q2.bits == 3  # 5 signed levels
    assert LSQuantizer("ls2", "act", signed=False).bits == 2
    assert LSQuantizer("lst", "act", signed=True).bits == 2
    assert LSQuantizer("lst", "weight").bits == 2


def test_ste_gradient_clipped_to_largest_level():
    q = LSQuantizer("ls1", "act", signed=True)
    q.calibrate_from(t(1, 2, 6))  # alpha 3
    q.eval()
    x = t(1, -2, 6).requires_grad_()
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]


def test_registered_with_their_own_bit_widths():
    for name, bw in (("ls1", 1), ("ls2", 2), ("lst", 2)):
        assert registry.make(name, 4, "weight", True).bits == bw
