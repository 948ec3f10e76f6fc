"""LeNet-5, the default model for 28x28 inputs: shape, size, and 4-bit QAT through the engine.

The data are the real scikit-learn digits written as an MNIST-format folder at 28x28
(bilinear upsampling of the 8x8 images, the fixed digits split), read by the IDX loader.
"""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from potlut import data, models
from potlut.data.digits import SPLIT_SEED, TEST_FRACTION
from potlut.data.idx import FILES, write_idx
from potlut.evaluation import int_logits
from potlut.infer.engine import IntEngine
from potlut.metrics.accuracy import evaluate
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.export import compress_model, snap_batchnorm
from potlut.train import TrainConfig, fit


def test_lenet5_size_and_default_for_28x28():
    m = models.build("lenet5", 10, 1)
    # 61,470 weights, BatchNorm, the output bias
    assert sum(p.numel() for p in m.parameters()) == 61_932
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert models.default_for((1, 28, 28)) == "lenet5"
    assert models.default_for((1, 8, 8)) == models.default_for((3, 32, 32)) == "small_cnn"


@pytest.fixture(scope="module")
def digits28_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits28")
    d = load_digits()
    img = torch.nn.functional.interpolate(
        torch.from_numpy(d.images.astype(np.float32))[:, None] * (255 / 16), size=(28, 28),
        mode="bilinear", align_corners=False)
    img = img[:, 0].round().clamp(0, 255).numpy().astype(np.uint8)
    xtr, xte, ytr, yte = train_test_split(img, d.target.astype(np.uint8),
                                          test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                          stratify=d.target)
    for key, arr in (("train_images", xtr), ("train_labels", ytr), ("test_images", xte),
                     ("test_labels", yte)):
        write_idx(folder / FILES[key], arr)
    return folder


@pytest.fixture(scope="module")
def digits28(digits28_dir):
    return data.load(f"mnist:{digits28_dir}")


def test_lenet5_4bit_qat_on_28x28_digits_and_engine_agrees(digits28, tmp_path):
    torch.manual_seed(0)
    fp32 = models.build("lenet5", 10, 1)
    fit(fp32, digits28, TrainConfig(epochs=8, seed=0), stage="fp32", progress=False)
    fp32_top1 = evaluate(fp32, digits28.test)[0]
    qmodel = convert(fp32, QuantSpec(bits=4, act_signed=False))
    calibrate(qmodel, digits28.calibration_batch())
    fit(qmodel, digits28, TrainConfig(epochs=4, seed=0), stage="qat", progress=False)
    top1 = evaluate(snap_batchnorm(qmodel).eval(), digits28.test)[0]  # as the pipeline does
    assert fp32_top1 >= 97.0 and top1 >= fp32_top1 - 1.0
    compress_model(qmodel, digits28.in_shape, tmp_path / "m.potlut")
    logits, labels = int_logits(IntEngine(tmp_path / "m.potlut"), digits28.test)
    x = torch.stack([digits28.test[i][0] for i in range(len(digits28.test))])
    with torch.no_grad():
        fq = qmodel(x).argmax(1).numpy()
    assert int((logits.argmax(1) != fq).sum()) == 0
    assert 100.0 * float((fq == labels).mean()) == pytest.approx(top1, abs=1e-9)


def test_run_picks_lenet5_for_mnist_format_data(digits28_dir, tmp_path):
    """``potlut run --data mnist:DIR`` without ``--model`` trains LeNet-5, the MNIST baseline."""
    from potlut.pipeline import RunConfig, run

    rep = run(RunConfig(data=f"mnist:{digits28_dir}", epochs=6, qat_epochs=2, fp32_ref=False),
              tmp_path, progress=False)
    assert rep["model"] == rep["config"]["model"] == "lenet5"
    assert rep["fixops_fp32"] == 16 * 416_520  # LeNet-5 MACs: 117,600 + 240,000 + ... + 840
    assert rep["fp32_top1"] >= 97.0
