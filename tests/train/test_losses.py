"""Distribution loss (METHODS §2): value, modes, and the learnable coefficient moving."""

import math

import pytest
import torch

from potlut.data import load
from potlut.errors import PotlutConfigError
from potlut.models import build
from potlut.nn import QuantSpec, calibrate, convert, quant_layers
from potlut.train import DistributionLoss, TrainConfig, fit
from potlut.train.losses import HYPER_LR, HYPER_MAX, LEARNABLE_START, RATIO, layer_mismatch


def test_layer_mismatch_hand_computed():
    """D_l of a weight that repeats (0.1, 0.9, -0.4, 0.2), worked out by hand (no quantizer
    code): normalized values d / (std + 1e-5) with d = (-0.1, 0.7, -0.6, 0), projected onto
    3-bit IOS-PoT levels {0, 1/4, 1/2, 1} at alpha = 1."""
    torch.manual_seed(0)
    q = convert(build("small_cnn", 10, 1), QuantSpec(bits=3, weight_norm="layer"))
    _, layer = quant_layers(q)[1]
    n = layer.weight.numel()
    assert n == 4608
    with torch.no_grad():
        layer.weight_quant.a.fill_(1.0)
        pattern = torch.tensor([0.1, 0.9, -0.4, 0.2]).repeat(n // 4)
        layer.weight.copy_(pattern.view_as(layer.weight))
    std = math.sqrt((0.01 + 0.49 + 0.36 + 0.0) / 4 * n / (n - 1))  # unbiased, as torch.std
    wn = [d / (std + 1e-5) for d in (-0.1, 0.7, -0.6, 0.0)]  # -0.2156, 1.5095, -1.2938, 0
    levels = [-0.25, 1.0, -1.0, 0.0]  # |wn| 0.2157 -> 1/4 (between 1/8 and 3/8); >1 clips to 1
    expected = sum((w - v) ** 2 for w, v in zip(wn, levels, strict=True)) / sum(w * w for w in wn)
    assert expected == pytest.approx(0.0868, abs=1e-4)  # 0.3470 / 3.9992
    # float32 arithmetic on 4608 values: a few ulps
    assert float(layer_mismatch(layer).detach()) == pytest.approx(expected, rel=1e-5)
    # the weights get the gradient 2 (wn - q) / N / mean(wn^2), the scale none
    layer_mismatch(layer).backward()
    assert layer.weight_quant.a.grad is None or float(layer.weight_quant.a.grad) == 0.0


def test_modes():
    torch.manual_seed(0)
    q = convert(build("small_cnn", 10, 1), QuantSpec(bits=4))
    total = sum(float(layer_mismatch(m).detach()) for _, m in quant_layers(q))
    assert float(DistributionLoss("off")(q).detach()) == 0.0
    assert float(DistributionLoss("fixed", 0.5)(q).detach()) == pytest.approx(0.5 * total, rel=1e-5)
    old = DistributionLoss("uncertainty")
    assert float(old(q).detach()) == pytest.approx(total, rel=1e-5)  # exp(-0) * D + 0
    assert old.s.requires_grad and not DistributionLoss("fixed").s.requires_grad
    learn = DistributionLoss("learnable")
    assert not learn.s.requires_grad
    assert float(learn(q).detach()) == 0.0  # no task gradient seen yet: lambda = 0
    with pytest.raises(PotlutConfigError):
        DistributionLoss("sometimes")


def test_learnable_coefficient_moves_during_training():
    torch.set_num_threads(1)
    bundle = load("digits")
    torch.manual_seed(0)
    q = convert(build("small_cnn", 10, 1), QuantSpec(bits=3))
    calibrate(q, bundle.calibration_batch())
    hist = fit(q, bundle, TrainConfig(epochs=3, seed=0), stage="qat", progress=False)
    lams = [e.dist_lambda for e in hist.epochs]
    ratios = [e.dist_ratio for e in hist.epochs]
    assert all(math.isfinite(v) and v >= 0 for v in lams)
    assert all(0.0 <= r <= HYPER_MAX for r in ratios) and ratios[-1] < RATIO  # on digits it fades


def test_ratio_coefficient_is_a_fixed_fraction_of_the_task_gradient():
    """lambda = RATIO * |grad L_task| / |grad sum D| on the normalized weights of the step."""
    torch.manual_seed(0)
    q = convert(build("small_cnn", 10, 1), QuantSpec(bits=3)).train()
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 10
    dist = DistributionLoss("ratio")
    ce = torch.nn.CrossEntropyLoss()
    (ce(q(x), y) + dist(q)).backward()  # step 1: lambda 0, the hooks record |grad L_task|
    assert dist.lam == 0.0
    loss = ce(q(x), y)  # the same step again (no update): the task gradient is the recorded one
    inner = [m.last_weights[0] for _, m in quant_layers(q) if m.weight_norm]
    g_task = torch.autograd.grad(loss, inner, retain_graph=True)
    reg = dist(q)
    g_reg = torch.autograd.grad(reg, inner, retain_graph=True)
    norm = lambda gs: float(torch.sqrt(sum((g**2).sum() for g in gs)))  # noqa: E731
    assert dist.lam > 0
    assert norm(g_reg) == pytest.approx(RATIO * norm(g_task), rel=1e-5)
    assert float(dist.task_norm) == pytest.approx(norm(g_task), rel=1e-5)


def test_learnable_ratio_follows_the_agreement_of_task_and_regularizer_gradients():
    """A task gradient along the regularizer's raises the fraction by HYPER_LR (cos = 1); one
    against it lowers it by HYPER_LR (cos = -1), never below 0."""
    torch.manual_seed(0)
    q = convert(build("small_cnn", 10, 1), QuantSpec(bits=3)).train()
    x = torch.randn(16, 1, 8, 8)
    dist = DistributionLoss("learnable", ratio=RATIO)  # a start the two steps can come back to
    layers = [m for _, m in quant_layers(q) if m.weight_quant is not None]
    seen = []
    for sign in (1.0, -1.0, -1.0):  # the "task loss" is +-sum D itself: cos(g_task, g_D) = sign
        q(x)
        task = sign * torch.stack([layer_mismatch(m) for m in layers]).sum()
        (task + dist(q)).backward()
        dist.end_step()
        seen.append(float(dist.ratio_now))
    assert seen == pytest.approx([RATIO + HYPER_LR, RATIO, 0.0], abs=1e-6)


def test_each_adaptive_mode_has_its_own_default_share():
    """ratio: a fixed 1 %; learnable: starts practically at 0 (it must earn its pull); a share
    that is not positive is refused (TrainConfig too)."""
    assert DistributionLoss("ratio").ratio == RATIO == 0.01
    learn = DistributionLoss("learnable")
    assert learn.ratio == LEARNABLE_START == 1e-9 and float(learn.ratio_now) == pytest.approx(1e-9)
    for bad in (0.0, -0.01, float("nan")):
        with pytest.raises(PotlutConfigError):
            DistributionLoss("learnable", ratio=bad)
        with pytest.raises(PotlutConfigError):
            TrainConfig(dist_ratio=bad).validate()


def test_distillation_is_t_squared_kl_of_softened_outputs():
    """Two classes, logits (0, 0) against a teacher's (2, 0) at T = 2: p_t = softmax(1, 0)."""
    from potlut.train.loop import distillation

    pt1 = math.exp(1) / (math.exp(1) + 1)
    kl = pt1 * math.log(pt1 / 0.5) + (1 - pt1) * math.log((1 - pt1) / 0.5)
    got = distillation(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]), 2.0)
    assert float(got) == pytest.approx(4 * kl, rel=1e-6)
    same = torch.randn(8, 10)
    assert float(distillation(same, same.clone(), 4.0)) == pytest.approx(0.0, abs=1e-6)


def test_ramp_is_a_half_cosine_over_the_stage():
    """``set_ramp``: the share of the ratio in force at the middle of each epoch."""
    dist = DistributionLoss("ratio")
    got = []
    for epoch in range(4):
        dist.set_ramp(epoch, 4)
        got.append(dist.ramp)
    # (1 - cos(pi (e + 1/2) / 4)) / 2: cos(pi/8) = 0.92388, cos(3 pi/8) = 0.38268
    assert got == pytest.approx([0.03806, 0.30866, 0.69134, 0.96194], abs=1e-5)
