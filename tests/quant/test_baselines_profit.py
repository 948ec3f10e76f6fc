"""PROFIT: the AIWQ metric, the freezing schedule, and that frozen layers really stop."""

from __future__ import annotations

import math

import pytest
import torch

from potlut.models import build
from potlut.nn import QuantSpec, calibrate, convert
from potlut.quant.profit import (
    ProgressiveFreezer,
    aiwq,
    frozen_params,
    gaussian_kl,
)


def test_gaussian_kl_by_hand():
    # KL(N(0,1) || N(1,2)) = log 2 + (1 + 1) / 8 - 1/2
    got = gaussian_kl(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0), torch.tensor(2.0))
    assert got.item() == pytest.approx(math.log(2) - 0.25, abs=1e-6)


def test_aiwq_is_zero_for_identical_outputs_and_grows_with_a_shift():
    torch.manual_seed(0)
    y = torch.randn(8, 3, 4, 4)
    assert aiwq(y, y) == pytest.approx(0.0, abs=1e-6)
    assert aiwq(y + 0.5, y) > aiwq(y + 0.1, y) > 0


def _model():
    torch.manual_seed(0)
    m = convert(build("small_cnn", 10, 1), QuantSpec(scheme="iospot", bits=4))
    x = torch.randn(32, 1, 8, 8)
    calibrate(m, x)
    return m, x, torch.randint(0, 10, (32,))


def _step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def test_freezer_measures_ranks_and_freezes_in_thirds():
    model, x, y = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    fr = ProgressiveFreezer(model, epochs=6)
    assert fr.boundaries() == [2, 4]
    assert len(fr.convs) == 3  # the three convs of small_cnn (the linear layer is not a conv)
    fr.attach()
    model.train()
    for _ in range(4):
        _step(model, opt, x, y)
    assert all(n == 3 for n in fr.metric_n.values())  # first step has no previous weight
    assert all(v > 0 for v in fr.metric().values())
    fr.on_epoch_end(1)
    assert fr.frozen == []
    fr.on_epoch_end(2)
    metric = fr.metric()
    assert fr.order == sorted(metric, key=lambda n: -metric[n])
    assert fr.frozen == fr.order[:1]
    frozen = frozen_params(model, fr.frozen)
    before = [p.detach().clone() for p in frozen]
    others = [p for n, p in model.named_parameters()
              if n.endswith(".weight") and all(p is not f for f in frozen)]
    others_before = [p.detach().clone() for p in others]
    _step(model, opt, x, y)
    assert all(torch.equal(a, p) for a, p in zip(before, frozen, strict=True))
    assert any(not torch.equal(a, p) for a, p in zip(others_before, others, strict=True))
    fr.on_epoch_end(4)
    assert fr.frozen == fr.order[:2]
    state = fr.state_dict()
    fr.detach()
    # a fresh freezer restored from the state freezes the same layers again
    fr2 = ProgressiveFreezer(model, epochs=6)
    fr2.load_state_dict(state)
    fr2.attach()
    frozen = frozen_params(model, fr2.frozen)
    before = [p.detach().clone() for p in frozen]
    _step(model, opt, x, y)
    assert all(torch.equal(a, p) for a, p in zip(before, frozen, strict=True))
    fr2.detach()


def test_catch_up_applies_missed_boundaries():
    model, _, _ = _model()
    fr = ProgressiveFreezer(model, epochs=9)
    fr.catch_up(7)
    assert len(fr.order) == 3 and len(fr.frozen) == 2
    fr.detach()
