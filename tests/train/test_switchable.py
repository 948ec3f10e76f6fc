"""Joint training of every width: collaborative teacher, block swapping, accuracy floors."""

import math

import pytest
import torch

from potlut.data import load
from potlut.models import build
from potlut.nn import QuantSpec
from potlut.nn.switchable import quantize_switchable
from potlut.train import TrainConfig, fit
from potlut.train.switchable import JointStep, SwitchConfig, fit_switchable


def _model(widths=(2, 3, 4, 8)):
    torch.manual_seed(0)
    return quantize_switchable(build("small_cnn", 10, 1), QuantSpec(), widths)


def test_collaborative_teacher_is_the_wider_width_with_the_lowest_running_loss():
    sm = _model()
    joint = JointStep(sm, TrainConfig(epochs=10), SwitchConfig())
    assert joint.teacher_for(8) is None
    assert joint.teacher_for(2) == 8  # no running losses yet: the widest
    joint.loss_ema.copy_(torch.tensor([0.9, 0.5, 0.3, 0.4]))
    assert joint.teacher_for(2) == 4 and joint.teacher_for(3) == 4 and joint.teacher_for(4) == 8
    joint.loss_ema.copy_(torch.tensor([0.9, 0.5, 0.3, 0.3]))
    assert joint.teacher_for(2) == 4  # ties go to the narrower width


def test_swap_schedule_and_draws():
    sm = _model()
    joint = JointStep(sm, TrainConfig(epochs=10, seed=3), SwitchConfig(swap_prob=0.5))
    probs = [joint.swap_probability(e) for e in (0, 1, 4, 5, 9)]
    assert probs == pytest.approx([0.5, 0.4, 0.1, 0.0, 0.0], abs=1e-12)
    a = joint._swaps(sm, 2, 8, epoch=0, step=7)
    assert a == joint._swaps(sm, 2, 8, epoch=0, step=7)  # seeded: a resumed run draws the same
    assert set(a.values()) <= {8} and set(a) <= set(range(len(sm.units())))
    n = sum(len(joint._swaps(sm, 2, 8, epoch=0, step=s)) for s in range(200))
    assert abs(n / (200 * 4) - 0.5) < 0.06  # about half the 4 units at p = 0.5
    assert joint._swaps(sm, 2, 8, epoch=5, step=0) == {}
    off = JointStep(sm, TrainConfig(epochs=10), SwitchConfig(swap=False))
    assert off.swap_probability(0) == 0.0 and off._swaps(sm, 2, 8, 0, 0) == {}


def test_step_without_teacher_is_the_sum_of_cross_entropies():
    sm = _model((3, 4))
    cfg = TrainConfig(epochs=2, dist_loss="off")
    joint = JointStep(sm, cfg, SwitchConfig(teacher=False, swap=False))
    bundle = load("digits")
    x, y = bundle.train.tensors[0][:64], bundle.train.tensors[1][:64]
    total, ce8, _ = joint(sm, x, y, 0, 0)
    ces = []
    for b in (4, 3):
        sm.set_bits(b)
        ces.append(torch.nn.functional.cross_entropy(sm(x), y))
    assert math.isclose(float(total.detach()), float(sum(ces).detach()), rel_tol=1e-5)
    with_kd = JointStep(sm, cfg, SwitchConfig(teacher=True, swap=False))
    assert float(with_kd(sm, x, y, 0, 0)[0].detach()) > float(total.detach())  # + KL > 0


def test_joint_training_reaches_a_floor_at_every_width():
    bundle = load("digits")
    torch.manual_seed(0)
    fp32 = build("small_cnn", 10, 1)
    fit(fp32, bundle, TrainConfig(epochs=4), progress=False)
    sm = quantize_switchable(fp32, QuantSpec(), (2, 3, 4, 8), bundle.calibration_batch())
    hist, acc = fit_switchable(sm, bundle, TrainConfig(epochs=3), progress=False)
    # measured: 95.37 / 96.85 / 96.85 / 97.22 (540 test images, one image = 0.19 points)
    assert acc[2] >= 93.0 and min(acc[3], acc[4], acc[8]) >= 95.0, acc
    assert hist.done and len(hist.epochs) == 3
    assert not hasattr(sm, "joint")


class _Killed(Exception):
    pass


def test_killed_joint_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from potlut.train import loop

    bundle = load("digits")
    torch.manual_seed(0)
    fp32 = build("small_cnn", 10, 1)
    batch = bundle.calibration_batch()
    cfg = TrainConfig(epochs=2, seed=5)

    def fresh():
        return quantize_switchable(fp32, QuantSpec(), (2, 4), batch)

    whole = fresh()
    fit_switchable(whole, bundle, cfg, checkpoint=tmp_path / "a.ckpt", progress=False)
    save = loop._save

    def save_then_die(*args, **kw):
        save(*args, **kw)
        raise _Killed

    monkeypatch.setattr(loop, "_save", save_then_die)
    with pytest.raises(_Killed):
        fit_switchable(fresh(), bundle, cfg, checkpoint=tmp_path / "b.ckpt", progress=False)
    monkeypatch.setattr(loop, "_save", save)
    epochs_run = []
    train_epoch = loop._train_epoch

    def counted(run, data, cfg, stage, epoch, *rest):
        epochs_run.append(epoch)
        return train_epoch(run, data, cfg, stage, epoch, *rest)

    monkeypatch.setattr(loop, "_train_epoch", counted)
    resumed = fresh()
    fit_switchable(resumed, bundle, cfg, checkpoint=tmp_path / "b.ckpt", resume=True,
                   progress=False)
    assert epochs_run == [1]  # only the second epoch ran again
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
