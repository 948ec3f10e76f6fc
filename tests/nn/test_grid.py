"""The fake-quantized model's eval forward computes the integer engine's numbers (nn/grid.py).

On the real CIFAR-10 sample (../shared/data), a briefly trained ResNet-8 (residual adds,
option-A shortcuts, global pooling: the fixed-point stream that once put up to 8 of 761
images in another class) in every mode the engine runs, signed activations at 2..5 bits and
unsigned at 2..4 (5-bit unsigned levels span 2^30: refused), gives the engine's logits
exactly: the same integers in units of 2^-F on every validation image. Short schedule
(FP32 3 epochs, then per mode one QAT epoch on 640 training images) to keep CI time down:
agreement does not need a converged model, only codes that sit near thresholds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from potlut.evaluation import int_logits
from potlut.infer import IntEngine
from potlut.models.resnet_cifar import ResNetCifar
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.export import compress_model
from potlut.train import TrainConfig, fit

from ..train.test_cifar_sample import cifar  # noqa: F401 (the CIFAR-10 sample fixture)

MODES = [(b, True) for b in (2, 3, 4, 5)] + [(b, False) for b in (2, 3, 4)]


@pytest.fixture(scope="module")
def resnet8(cifar):  # noqa: F811
    torch.manual_seed(0)
    model = ResNetCifar(depth=8, num_classes=10, in_channels=3)
    fit(model, cifar, TrainConfig(epochs=3, seed=0), stage="fp32", progress=False)
    return model


@pytest.mark.parametrize("bits,signed", MODES,
                         ids=[f"{b}bit-{'signed' if s else 'unsigned'}" for b, s in MODES])
def test_engine_gives_the_fake_quantized_logits(cifar, resnet8, bits, signed,  # noqa: F811
                                                tmp_path) -> None:
    qmodel = convert(resnet8, QuantSpec(bits=bits, act_signed=signed))
    calibrate(qmodel, cifar.calibration_batch())
    few = replace(cifar, train=torch.utils.data.Subset(cifar.train, range(640)))
    fit(qmodel, few, TrainConfig(epochs=1, seed=0), stage="qat", progress=False)
    qmodel.eval()
    path = tmp_path / "m.potlut"
    compress_model(qmodel, cifar.in_shape, path)
    engine = IntEngine(path)
    logits, labels = int_logits(engine, cifar.test)
    x = torch.stack([cifar.test[i][0] for i in range(len(cifar.test))])
    with torch.no_grad():
        fq = qmodel(x)
    assert fq.dtype == torch.float64 and len(labels) == 761
    top1 = 100.0 * float((fq.argmax(1).numpy() == labels).mean())
    assert top1 > 18.0  # trained, not chance (10 %)
    # the fake-quantized logits lie on the 2^-F grid and are the engine's integers: the
    # tolerance is zero units, so the class is the same on every image
    units = fq.numpy() * 2.0**engine.program.frac_bits
    assert np.array_equal(units, np.floor(units))
    np.testing.assert_array_equal(logits.astype(np.int64), units.astype(np.int64))
    assert np.abs(logits).max() > 2**engine.program.frac_bits // 4  # not all near zero


def test_five_bit_layer_rounds_its_products_as_the_table_does() -> None:
    """A 5-bit layer's table rounds products below 2^shift units (its accumulator would
    overflow int32 otherwise); activations at the smallest levels hit exactly those. The
    grid eval forward of the layer equals the reference accumulator on such codes, and
    differs from the unrounded sum (so the check sees the rounding)."""
    from potlut.infer import lower
    from potlut.infer.reference import accumulate, decode_values
    from potlut.nn.export import export_graph

    torch.manual_seed(0)
    q = convert(ResNetCifar(depth=8), QuantSpec(bits=5, act_signed=True))
    calibrate(q, torch.randn(16, 3, 32, 32))
    q.eval()
    prog = lower(export_graph(q, (3, 32, 32)))
    st = prog.layers()[1]
    assert st.plut is not None and st.plut.shift > 0
    layer = q.get_submodule(st.module)
    with torch.no_grad():
        q(torch.zeros(1, 3, 32, 32))  # puts the model on its grid (F)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(2, *st.in_shape))  # the four smallest magnitudes
    codes = codes + rng.integers(0, 2, size=codes.shape) * 2**st.act.kbits  # signs
    acc = accumulate(st, codes)  # [N, O, L] in units of 2^acc_exp
    x = torch.from_numpy(decode_values(codes, st.act) * 2.0**st.act.unit_exp)
    with torch.no_grad():
        out = layer(x).numpy().reshape(acc.shape)
    np.testing.assert_array_equal(out * 2.0**-st.acc_exp, acc)
    w = layer.quantized_weight().double()
    with torch.no_grad():
        plain = layer._conv_forward(x, w, None).numpy().reshape(acc.shape)
    assert not np.array_equal(plain * 2.0**-st.acc_exp, acc)


def test_training_evaluates_early_epochs_in_float32_and_the_last_on_the_grid():
    """``fit`` scores epochs before the last with the grid off (fast float32) and the last
    on it: the last epoch's Top-1 is the one the engine gives; ``grid_off`` nests and restores."""
    from potlut.data import load
    from potlut.metrics.accuracy import evaluate
    from potlut.models import build
    from potlut.nn.grid import grid_off
    from potlut.nn.layers import quant_layers

    torch.manual_seed(0)
    bundle = load("digits")
    q = convert(build("small_cnn", 10, 1), QuantSpec(bits=3))
    calibrate(q, bundle.calibration_batch())
    seen = []
    hist = fit(q, bundle, TrainConfig(epochs=2, seed=0), stage="qat", progress=False,
               on_epoch_end=lambda e, log: seen.append(
                   [m.frac_bits for _, m in quant_layers(q)]))
    assert all(f is None for f in seen[0])  # epoch 1 scored in float32
    assert all(isinstance(f, int) for f in seen[1])  # the last epoch on the grid
    assert hist.epochs[-1].test_top1 == evaluate(q, bundle.test)[0]
    with grid_off(q), grid_off(q):
        evaluate(q, bundle.test)
        assert all(m.frac_bits is None for _, m in quant_layers(q))
    evaluate(q, bundle.test)
    assert all(isinstance(m.frac_bits, int) for _, m in quant_layers(q))
