"""`potlut report`: PNG plots and Markdown from a short real run."""

import json
import struct

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from potlut.cli.main import app
from potlut.compress import file_stats, read
from potlut.pipeline import RunConfig, run
from potlut.report import entropy_bound_bytes, make_report, model_dims


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    try:
        run(RunConfig(epochs=2, qat_epochs=1, batch_size=64, device="cpu"), out, progress=False)
    finally:
        torch.set_num_threads(before)
    return out


def png_size(path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


def test_report_writes_three_pngs_and_markdown(short_run):
    res = CliRunner().invoke(app, ["report", str(short_run)])
    assert res.exit_code == 0, res.output
    folder = short_run / "report"
    assert res.output.split() == [str(folder / f) for f in
                                  ("convergence.png", "weights.png", "layer_sizes.png",
                                   "report.md")]
    assert png_size(folder / "convergence.png") == (1200, 400)
    assert png_size(folder / "weights.png") == (4 * 360, 260)  # 4 layers in one row
    w, h = png_size(folder / "layer_sizes.png")
    assert w >= 600 and h == 450
    md = (folder / "report.md").read_text()
    for name in ("features.0", "features.3", "features.6", "fc"):
        assert f"| {name} |" in md
    assert "2 FP32 epochs, then 1 QAT epochs" in md
    assert "measured on model.potlut" in md
    for png in ("convergence.png", "weights.png", "layer_sizes.png"):
        assert f"]({png})" in md


def test_plots_draw_the_run_s_numbers(short_run, tmp_path):
    """Each figure's drawn data read back: the history's losses and accuracies, each
    quantized value's share of the layer's weights, and the file's per-layer bytes."""
    from potlut.report import (
        layer_weights,
        plot_convergence,
        plot_sizes,
        plot_weights,
        read_run,
        rebuild,
    )

    report, cfg = read_run(short_run)
    h = report["history"]
    fig = plot_convergence(h, tmp_path / "c.png")
    loss, acc = ([line for line in a.lines if not line.get_label().startswith("_")]
                 for a in fig.axes)  # the labelled series; the stage divider is unlabelled
    assert [list(line.get_xdata()) for line in loss] == [[1, 2], [3]]  # QAT after FP32
    assert [list(line.get_ydata()) for line in loss] == [
        [e["train_loss"] for e in h["fp32"]["epochs"]],
        [e["train_loss"] for e in h["qat"]["epochs"]]]
    assert [list(line.get_ydata()) for line in acc] == [
        [e[k] for e in h[stage]["epochs"]]
        for stage in ("fp32", "qat") for k in ("test_top1", "test_top5")]
    layers = layer_weights(*rebuild(short_run, cfg))
    fig = plot_weights(layers, tmp_path / "w.png")
    for a, lw in zip(fig.axes, layers, strict=True):
        values, counts = np.unique(lw.quant, return_counts=True)
        segs = a.collections[0].get_segments()  # one vertical line per quantized value
        assert [s[0][0] for s in segs] == pytest.approx(values.tolist(), abs=0)
        assert [s[1][1] for s in segs] == pytest.approx((counts / lw.quant.size).tolist())
        assert sum(p.get_height() for p in a.patches) == pytest.approx(1.0)  # FP32 histogram
    graph, info = read(short_run / "model.potlut")
    rows = [r for r in file_stats(graph, info)["layers"] if r["bits"] < 32]
    fig = plot_sizes(rows, tmp_path / "s.png")
    bars = fig.axes[0].containers
    assert [b.get_label() for b in bars][:2] == ["FP32", "raw b-bit"]
    assert [p.get_height() for p in bars[0]] == [r["fp32_bytes"] for r in rows]
    assert [p.get_height() for p in bars[-1]] == [max(r["entropy_bound_bytes"], 1.0)
                                                 for r in rows]


def test_sizes_come_from_the_potlut_file_and_match_the_entropy_bound(short_run, tmp_path):
    result = make_report(short_run, tmp_path / "r")
    assert result["sizes_measured"] and result["layers"] == 4
    assert not (tmp_path / "r" / "model.potlut").exists()  # the run's own file was used
    graph, info = read(short_run / "model.potlut")
    rows = {r["name"]: r for r in file_stats(graph, info)["layers"]}
    assert set(rows) == {"features.0", "features.3", "features.6", "fc"}
    from potlut.report import layer_weights, read_run, rebuild

    _, cfg = read_run(short_run)
    lw = {w.name: w for w in layer_weights(*rebuild(short_run, cfg))}
    for name in ("features.3", "features.6"):  # 4-bit IOS-PoT layers
        assert lw[name].bits == 4 and len(np.unique(lw[name].quant)) <= 15
        assert entropy_bound_bytes(lw[name].quant) == pytest.approx(
            rows[name]["entropy_bound_bytes"], abs=0.1)
        assert rows[name]["raw_bytes"] == lw[name].quant.size * 4 // 8


def test_report_json_carries_the_files_and_the_measured_sizes(short_run, tmp_path):
    res = CliRunner().invoke(app, ["report", str(short_run), "--out", str(tmp_path / "j"),
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["files"] == [str(tmp_path / "j" / f) for f in
                            ("convergence.png", "weights.png", "layer_sizes.png", "report.md")]
    assert out["layers"] == 4 and out["sizes_measured"] is True
    graph, info = read(short_run / "model.potlut")
    want = [r for r in file_stats(graph, info)["layers"] if r["bits"] < 32]
    assert out["sizes"] == want  # the rows of `potlut inspect`, byte for byte
    assert out["sizes_source"].startswith(f"measured on model.potlut ({info.file_bytes:,} bytes")


def test_analytic_sizes_when_the_data_is_gone(short_run, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    for f in ("fp32.ckpt", "qat.ckpt"):
        (copy / f).write_bytes((short_run / f).read_bytes())
    rep = json.loads((short_run / "report.json").read_text())
    rep["config"]["data"] = f"mnist:{tmp_path / 'missing'}"
    (copy / "report.json").write_text(json.dumps(rep))
    result = make_report(copy)
    assert not result["sizes_measured"]
    md = (copy / "report" / "report.md").read_text()
    assert "analytic (FP32, raw b-bit packing, order-0 entropy bound)" in md
    assert "| features.6 | 4 | 73,728 | 9,216 |" in md  # 18,432 weights: 4 B FP32, 4 bits


def test_bad_run_folder_is_one_line_error(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2
    assert "no report.json" in res.output and res.output.count("\n") == 1


def test_model_dims_from_state_dict():
    from potlut import models

    for name, classes, chans in (("small_cnn", 10, 1), ("squeezenet1_1", 7, 3),
                                 ("scn", 7, 3), ("shufflenet_v2_x1_0", 100, 3)):
        assert model_dims(models.build(name, classes, chans).state_dict()) == (classes, chans)


def test_compress_json_describes_the_file_it_wrote(short_run, tmp_path):
    res = CliRunner().invoke(app, ["compress", str(short_run), "-o", str(tmp_path / "m.potlut"),
                                   "--json"])
    assert res.exit_code == 0, res.output
    made = json.loads(res.output)
    assert made["file_bytes"] == (tmp_path / "m.potlut").stat().st_size
    assert (tmp_path / "m.potlut").read_bytes() == (short_run / "model.potlut").read_bytes()
