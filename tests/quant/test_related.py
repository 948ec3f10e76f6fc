"""SQ, ESB and SRQ + DropBits: level sets and fitted values by hand, schedules, file export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from potlut.errors import PotlutError
from potlut.nn import QuantSpec, convert
from potlut.quant.esb import ESBQuantizer, dda_scale, esb_levels, shift_adds_per_product
from potlut.quant.sq import SQWeightQuantizer, ratio_at, ratio_schedule, selection_probabilities
from potlut.quant.srq import SRQQuantizer, learned_bits_schedule, semi_relaxed


def t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


# -- SQ ------------------------------------------------------------------------------------

def test_sq_selection_probability_is_inverse_relative_error():
    w = torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    q = torch.tensor([[1.0, -1.0 + 0.5], [1.0, 0.0]])
    # e = 0.5 / 2 = 0.25 and 1 / 2 = 0.5 -> f = 4, 2 -> p = 2/3, 1/3
    p = selection_probabilities(w, q)
    assert p.tolist() == pytest.approx([2 / 3, 1 / 3])


def test_sq_quantizes_the_ratio_of_filters_and_schedule_reaches_100():
    torch.manual_seed(0)
    sq = SQWeightQuantizer()
    w = torch.randn(8, 3)
    y = sq.train()(w)
    quantized = [bool((y[i].abs().unique().numel() <= 2) and not torch.equal(y[i], w[i]))
                 for i in range(8)]
    assert sum(quantized) == 4 and int(sq.chosen.sum()) == 4  # ratio 50 %
    assert [ratio_at(e, 8) for e in range(9)] == [0.5, 0.5, 0.75, 0.75, 0.875, 0.875, 1.0,
                                                   1.0, 1.0]
    with pytest.raises(PotlutError, match="ratio 0.5"):
        sq.export(w)
    model = convert(nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 2)),
                    QuantSpec(scheme="sq", bits=4))
    cb = ratio_schedule(model, 8)
    assert float(model[1].weight_quant.ratio) == 0.5
    for e in range(1, 9):
        cb(e, None)
    assert float(model[1].weight_quant.ratio) == 1.0
    ex = model[1].weight_quant.export(model[1].weight)
    assert ex.codebook.size == 2 and ex.codebook[0] == 0  # ternary {0, alpha}


# -- ESB -----------------------------------------------------------------------------------

def test_esb_levels_and_shift_adds_by_hand():
    # 4-bit signed, 2 significant bits: 1.5, 1, .75, .5, .375, .25, .1875 (/1.5) and 0
    want = [0, 0.1875, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5]
    assert esb_levels(4).tolist() == pytest.approx([v / 1.5 for v in want])
    # 1 significant bit is power of two
    assert esb_levels(3, k=1).tolist() == [0.0, 0.25, 0.5, 1.0]
    # in units of 1/16: 3, 4, 6, 8, 12, 16, 24 -> set bits 2, 1, 2, 1, 2, 1, 2
    assert shift_adds_per_product(esb_levels(4) * 0.37) == [0, 2, 1, 2, 1, 2, 1, 2]


def test_esb_dda_scale_is_a_least_squares_fixed_point():
    # levels {0, 0.5, 1} (3-bit unsigned? no: 2-bit unsigned k=1 -> 0, 1/4, 1/2, 1)
    lv = esb_levels(2, k=1, signed=False)
    assert lv.tolist() == [0.0, 0.25, 0.5, 1.0]
    x = torch.tensor([1.0, 2.0, 4.0, 4.0])
    # alpha = 4: x/alpha = .25, .5, 1, 1 -> exactly on the levels: the fixed point is 4
    assert dda_scale(x, lv, 3.0) == pytest.approx(4.0)
    xs = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 3
    q = ESBQuantizer(3, role="act", signed=False)
    q.calibrate_from(xs)
    a = float(q.alpha)
    lv = q.levels().double()

    def err(alpha: float) -> float:
        idx = torch.bucketize((xs / alpha).clamp(0, 1), (lv[1:] + lv[:-1]) / 2, right=True)
        return float(((lv[idx] * alpha - xs) ** 2).sum())

    assert err(a) <= min(err(a * 1.05), err(a * 0.95))
    assert 0 < err(a) < err(float(xs.max()))  # better than scaling to the maximum


# -- SRQ + DropBits ------------------------------------------------------------------------

def test_srq_forward_is_nearest_and_gradient_is_the_relaxed_one():
    u = t(0.2, 0.7, -1.5, 2.9, 9.0).requires_grad_()
    c = semi_relaxed(u, -3, 3)
    assert c.tolist() == [0.0, 1.0, -2.0, 3.0, 3.0]
    c.sum().backward()
    # d/du of c0 + r1 with r1 = p1 / (p0 + p1) (tau = 0.5): positive inside, 0 clipped
    g = u.grad.tolist()
    assert all(v > 0 for v in g[:4]) and g[4] == 0.0
    # at u = 0.5 (halfway) the relaxed assignment is 1/2 and its slope is the steepest
    h = torch.tensor([0.5, 0.1], requires_grad=True)
    semi_relaxed(h, -3, 3).sum().backward()
    assert h.grad[0] > h.grad[1]


def test_srq_export_matches_forward_and_bits_drop_when_the_gate_closes():
    q = SRQQuantizer(4, role="weight")
    with torch.no_grad():
        q.log_s.fill_(math.log(0.25))
    q.eval()
    x = t(0.1, -0.3, 0.9, 5.0)
    assert q(x).tolist() == [0.0, -0.25, 1.0, 1.75]  # codes 0, -1, 4, 7 (clipped)
    ex = q.export(x)
    assert ex.codes.tolist() == [0, 1, 4, 7] and ex.negative.tolist() == [False, True, False,
                                                                          False]
    np.testing.assert_array_equal(ex.codebook, np.arange(8) * 0.25)
    model = nn.Module()
    model.q = q
    cb = learned_bits_schedule(model, 4)
    cb(1, None)
    assert int(q.cur_bits) == 4  # keep probability 0.9: nothing dropped
    with torch.no_grad():
        q.theta.fill_(-1.0)
    cb(2, None)
    assert int(q.cur_bits) == 3 and q.bits == 3 and q.top() == 3
    assert float(q.log_s.detach().exp()) == pytest.approx(0.5)
    assert q.keep_probability() == pytest.approx(0.9)
    with torch.no_grad():
        q.theta.fill_(-1.0)
    cb(3, None)
    assert int(q.cur_bits) == 3  # second half of QAT: widths stay, the model fine-tunes


def test_dropbits_drops_bits_in_training_and_the_penalty_closes_the_gate():
    torch.manual_seed(0)
    q = SRQQuantizer(4, role="weight").train()
    with torch.no_grad():
        q.log_s.fill_(0.0)
        q.theta.fill_(0.0)  # keep probability 1/2
    x = torch.full((4000,), 3.0, requires_grad=True)  # code 3: odd, its coarse code is 4
    y = q(x)
    frac_coarse = float((y == 4.0).float().mean())
    assert 0.45 < frac_coarse < 0.55 and set(y.unique().tolist()) == {3.0, 4.0}
    # no loss gradient on theta from a zero loss: the penalty alone lowers keep probability
    (0 * y).sum().backward()
    assert q.theta.grad.item() == pytest.approx(4.0 * 0.25)
