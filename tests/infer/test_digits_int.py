"""A briefly trained digits model: the integer engine agrees with the fake-quantized model;
``potlut infer`` prints its accuracy; bad input ends in one line and exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from potlut import data, models
from potlut.cli.main import app
from potlut.compress import save
from potlut.errors import PotlutDataError
from potlut.evaluation import int_logits, int_top1
from potlut.infer import IntEngine
from potlut.infer.reference import quantize_float
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.export import compress_model, export_graph
from potlut.pipeline import RunConfig, load_quantized, run

from .helpers import random_graph


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_int")
    cfg = RunConfig(epochs=12, qat_epochs=12, seed=0, device="cpu")
    run(cfg, out, progress=False)
    bundle = data.load("digits")
    qmodel = load_quantized(out, cfg)
    path = out / "m.potlut"
    compress_model(qmodel, bundle.in_shape, path, meta={"model": "small_cnn"})
    return path, qmodel, bundle


def _layer_inputs(qmodel, x):
    """The fake-quantized model's logits and the input of every quantized layer by name."""
    seen, hooks = {}, []
    for name, m in qmodel.named_modules():
        if getattr(m, "act_quant", None) is not None:
            hooks.append(m.register_forward_hook(
                lambda m, i, o, name=name: seen.__setitem__(name, i[0].numpy())))
    try:
        with torch.no_grad():
            return qmodel(x).numpy(), seen
    finally:
        for h in hooks:
            h.remove()


def test_engine_agrees_with_the_fake_quantized_model(digits) -> None:
    path, qmodel, bundle = digits
    engine = IntEngine(path)
    prog = engine.program
    logits, labels = int_logits(engine, bundle.test)
    x = torch.stack([bundle.test[i][0] for i in range(len(bundle.test))])
    fq, inputs = _layer_inputs(qmodel.eval(), x)
    fq_top1 = 100 * np.mean(fq.argmax(1) == labels)
    assert fq_top1 > 85  # trained, not chance
    # the eval forward computes the engine's numbers (nn/grid.py): every layer's input codes
    # are the float quantizer's codes of the same value, on all 540 images; the logits are
    # the engine's integers in units of 2^-F (a tolerance of zero units)
    env = engine.run(x, keep=True)
    for st in prog.layers():
        np.testing.assert_array_equal(env[st.src], quantize_float(inputs[st.module], st.act),
                                      err_msg=st.module)
    assert logits.dtype == np.int32 and fq.dtype == np.float64
    np.testing.assert_array_equal(logits, fq * 2.0**prog.frac_bits)
    assert 100 * np.mean(logits.argmax(1) == labels) == fq_top1
    assert int_top1(path, bundle) == pytest.approx(100 * np.mean(logits.argmax(1) == labels))
    assert int_top1(path, bundle, backend="numba") == int_top1(path, bundle)


def test_cli_infer_prints_integer_accuracy(digits) -> None:
    path, _, bundle = digits
    res = CliRunner().invoke(app, ["infer", str(path), "--data", "digits", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["images"] == len(bundle.test) == 540
    assert out["int_top1"] == pytest.approx(int_top1(path, bundle), abs=1e-3)
    assert out["int_top5"] >= out["int_top1"]
    assert out["ops"]["total"]["table_reads"] == 32 * 144 * 16 + 64 * 288 * 4
    assert out["exact"] is True and out["approximations"] == []  # IOS-PoT: exact tables
    res = CliRunner().invoke(app, ["infer", str(path), "--ops"])
    assert res.exit_code == 0 and "Top-1" in res.output and "features.3" in res.output


def _one_line_error(args: list[str], msg: str) -> None:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, (args, res.output)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("potlut: error:") and msg in lines[0], lines


def test_bad_input_is_one_line_and_exit_2(digits, tmp_path) -> None:
    path, _, _ = digits
    resnet = tmp_path / "resnet.potlut"
    save(random_graph("resnet20", (3, 32, 32), 4, seed=4), resnet)
    _one_line_error(["infer", str(resnet), "--data", "digits"], "model expects [3, 32, 32]")
    torch.manual_seed(0)
    lsq = convert(models.build("small_cnn", 10, 1), QuantSpec(scheme="lsq"))
    calibrate(lsq, torch.randn(8, 1, 8, 8))
    save(export_graph(lsq.eval(), (1, 8, 8)), tmp_path / "lsq.potlut")
    _one_line_error(["infer", str(tmp_path / "lsq.potlut")], "'lsq' cannot run integer-only")
    broken = tmp_path / "broken.potlut"
    broken.write_bytes(path.read_bytes()[:-7])
    _one_line_error(["infer", str(broken)], "")
    _one_line_error(["infer", str(tmp_path / "missing.potlut")], "")
    _one_line_error(["infer", str(path), "--backend", "gpu"], "unknown backend")
    _one_line_error(["infer", str(path), "--batch-size", "0"], "--batch-size")


def test_engine_rejects_wrong_shape_dtype_and_nan(digits) -> None:
    engine = IntEngine(digits[0])
    with pytest.raises(PotlutDataError, match=r"shape \[2, 1, 28, 28\].*\[N, 1, 8, 8\]"):
        engine.run(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(PotlutDataError, match="not floating point"):
        engine.run(np.zeros((2, 1, 8, 8), np.uint8))
    with pytest.raises(PotlutDataError, match="NaN"):
        engine.run(np.full((1, 1, 8, 8), np.nan, np.float32))
