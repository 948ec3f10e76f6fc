"""The fake-quantized model's eval forward computes the integer engine's numbers (nn/grid.py).

On the real CIFAR-10 sample (../shared/data), a briefly trained ResNet-8 (residual adds,
option-A shortcuts, global pooling: the fixed-point stream that once put 1 to 8 of 761
images in another class) in every mode the engine runs, signed activations at 2..5 bits and
unsigned at 2..4 (5-bit unsigned levels span 2^30: refused), gives the engine's logits
exactly: the same integers in units of 2^-F on every validation image. Short schedule
(FP32 3 epochs, QAT 1 epoch per mode) to keep CI time down.
"""

from __future__ import annotations

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
    fit(qmodel, cifar, TrainConfig(epochs=1, seed=0), stage="qat", progress=False)
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
    assert top1 > 25.0  # trained, not chance (10 %)
    # the fake-quantized logits lie on the 2^-F grid and are the engine's integers: the
    # tolerance is zero units, so the class is the same on every image
    units = fq.numpy() * 2.0**engine.program.frac_bits
    assert np.array_equal(units, np.floor(units))
    np.testing.assert_array_equal(logits.astype(np.int64), units.astype(np.int64))
    assert np.abs(logits).max() > 2**engine.program.frac_bits // 4  # not all near zero
