"""A digits model trained briefly: the file is near the entropy bound and loads exactly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from potlut import data
from potlut.cli.main import app
from potlut.compress import dequantized_weights, load
from potlut.infer import program
from potlut.infer.engine import IntEngine
from potlut.metrics import evaluate
from potlut.nn import quant_layers
from potlut.nn.export import to_torch
from potlut.pipeline import RunConfig, load_quantized, run

sys.path.insert(0, str(Path(__file__).parents[1] / "nn"))
from test_bn_fold import unfolded_affine  # noqa: E402

# measured 0.0356 with the code tables counted as coded weights (0.0245 without): S-Huff
# misses the 3 % bar by 0.56 points on this 23,824-weight model. The compact tables (format
# v2: w bits per length, unused top codes dropped) took it from 0.0427; what is left is
# mostly the two 128-code tables of the 8-bit first/last layers (144 and 640 weights)
GAP_WITH_TABLES = 0.036


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = RunConfig(epochs=1, qat_epochs=1, seed=0, device="cpu")
    report = run(cfg, out, progress=False)
    return out, cfg, report


@pytest.fixture(scope="module")
def compressed(trained):
    out, _, _ = trained
    res = CliRunner().invoke(app, ["compress", str(out), "-o", str(out / "m.potlut")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["inspect", str(out / "m.potlut"), "--json"])
    assert res.exit_code == 0, res.output
    return out / "m.potlut", json.loads(res.output)


def test_file_is_within_3_percent_of_the_entropy_bound(trained, compressed) -> None:
    _, _, report = trained
    path, st = compressed
    tot = st["total"]
    assert tot["final_bytes"] == path.stat().st_size
    # coded weights at most 3% above the order-0 bound; the rest is the stated overhead
    assert tot["final_bytes"] <= 1.03 * tot["entropy_bound_bytes"] + st["overhead_bytes"]
    assert st["bound_gap"] <= 0.03
    # with the Huffman code-length tables counted as coded weights, not overhead
    assert st["bound_gap"] < st["bound_gap_with_tables"] <= GAP_WITH_TABLES
    assert st["header_bytes"] == 80
    # the overhead (architecture, BN, bias, codebooks, code tables) stays small
    assert st["overhead_bytes"] < 0.3 * tot["final_bytes"]
    # analytic sizes agree with the pipeline's metrics (METHODS §5)
    assert tot["fp32_bytes"] == report["weight_bytes_fp32"] == 96_232
    assert tot["raw_bytes"] == report["weight_bytes_quant"] == 13_240
    assert tot["params"] == 23_824
    assert [r["bits"] for r in st["layers"]] == [8, 4, 4, 8]
    assert tot["compression_rate"] == round(96_232 / tot["final_bytes"], 2)
    assert tot["compression_rate"] > 6.5  # 4-bit IOS-PoT against FP32


def test_loading_gives_identical_weights_and_accuracy(trained, compressed) -> None:
    out, cfg, report = trained
    path, _ = compressed
    qmodel = load_quantized(out, cfg)
    graph = load(path)
    w = dequantized_weights(graph)
    for name, layer in quant_layers(qmodel):
        assert torch.equal(torch.from_numpy(w[name]), layer.quantized_weight().detach()), name
    test = data.load("digits").test
    top1, top5 = evaluate(to_torch(graph), test)
    assert round(top1, 4) == report["quant_top1"]
    assert (top1, top5) == evaluate(qmodel, test)
    x = torch.stack([test[i][0] for i in range(len(test))])
    with torch.no_grad():  # folded BatchNorm: the trained model's float32 arithmetic
        assert torch.equal(to_torch(graph)(x), qmodel(x))
    assert graph.meta["model"] == "small_cnn" and graph.meta["bits"] == 4


def test_engine_logits_are_those_of_the_unfolded_batchnorm(trained, compressed,
                                                           monkeypatch) -> None:
    """Format v2 folds BatchNorm into float32 scale/shift; on every digits test image the
    integer engine gives the logits of format v1's float64 reading of the four arrays."""
    out, cfg, _ = trained
    path, _ = compressed
    test = data.load("digits").test
    x = torch.stack([test[i][0] for i in range(len(test))]).numpy()
    new = IntEngine(load(path)).run(x)
    monkeypatch.setattr(program, "_bn_affine", unfolded_affine(load_quantized(out, cfg)))
    old = IntEngine(program.lower(load(path))).run(x)
    np.testing.assert_array_equal(new, old)


def test_cli_errors_are_one_line(trained, compressed, tmp_path) -> None:
    out, _, _ = trained
    runner = CliRunner()
    bad = tmp_path / "bad.potlut"
    bad.write_bytes((out / "m.potlut").read_bytes()[:100])
    for args, msg in [
        (["inspect", str(bad)], "truncated file"),
        (["inspect", str(tmp_path / "none.potlut")], "no such file"),
        (["compress", str(tmp_path)], "no qat.ckpt"),
        (["compress", str(out), "--coder", "zip"], "unknown coder"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0] and lines[0].startswith("potlut: error:")
