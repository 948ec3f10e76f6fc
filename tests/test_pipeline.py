"""The `potlut run` job end to end on digits: accuracy floors, report contents, resume after a
kill (its one-line user errors are in tests/cli/test_run.py)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from potlut.train.checkpoint import load_checkpoint

REPORT_KEYS = {
    "dataset", "model", "bits", "fp32_top1", "fp32_top5", "quant_top1", "quant_top5",
    "fixops_fp32", "fixops_quant", "weight_bytes_fp32", "weight_bytes_quant", "epochs", "seed",
}


def potlut(*args, check=True, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "potlut", *args], capture_output=True, text=True, env=env,
        stdin=subprocess.DEVNULL, **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"potlut {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    out = tmp_path_factory.mktemp("run4")
    proc = potlut("run", "--json", "--out", str(out))
    return out, json.loads(proc.stdout)


def test_default_run_meets_accuracy_floors(run4):
    out, rep = run4
    assert REPORT_KEYS <= set(rep)
    assert rep["dataset"] == "digits" and rep["bits"] == 4 and rep["model"] == "small_cnn"
    assert rep["fp32_top1"] >= 97.0
    assert rep["quant_top1"] >= rep["fp32_top1"] - 1.5
    assert rep["quant_top5"] >= 99.0
    # the FP32 reference trained as long as the quantized model: 40 + 40 epochs
    assert rep["fp32_ref_epochs"] == rep["epochs"] + rep["qat_epochs"] == 80
    assert rep["fp32_ref_top1"] >= 97.0 and rep["delta_against"] == "fp32_ref"
    assert rep["delta_top1"] == pytest.approx(rep["quant_top1"] - rep["fp32_ref_top1"], abs=1e-3)
    assert rep["delta_top1_vs_start"] == pytest.approx(
        rep["quant_top1"] - rep["fp32_top1"], abs=1e-3)
    # FIXOPS: middle layers at 4x4 bits, ends at 8x8; FP32 at 16 per MAC
    assert rep["fixops_fp32"] == 16 * 157_312
    assert rep["fixops_quant"] < rep["fixops_fp32"] / 40
    assert rep["weight_bytes_quant"] < rep["weight_bytes_fp32"] / 6
    # the compressed file and the integer-only engine on it
    assert (out / "model.potlut").stat().st_size == rep["file_bytes"]
    assert rep["entropy_bound_bytes"] < rep["file_bytes"] < rep["weight_bytes_quant"] * 1.2
    assert rep["int_top1"] == rep["quant_top1"]  # same prediction on every test image
    saved = json.loads((out / "report.json").read_text())
    assert saved["quant_top1"] == rep["quant_top1"]
    md = (out / "report.md").read_text()
    assert "| metric | FP32, 40 epochs | FP32, 80 epochs | 4-bit iospot, 40 + 40 epochs |" in md
    assert f"| Top-1 (%) | {rep['fp32_top1']:.2f} | {rep['fp32_ref_top1']:.2f} |" in md
    hist = saved["history"]
    assert [len(hist[k]["epochs"]) for k in ("fp32", "fp32_ref", "qat")] == [40, 40, 40]


def test_three_bit_run_reusing_the_fp32_stage(run4, tmp_path):
    out4, rep4 = run4
    shutil.copy(out4 / "fp32.ckpt", tmp_path / "fp32.ckpt")
    rep3 = json.loads(potlut("run", "--json", "--bits", "3", "--resume", "--out",
                             str(tmp_path)).stdout)
    assert rep3["fp32_top1"] == rep4["fp32_top1"]  # the FP32 stage was reused, not retrained
    assert rep3["quant_top1"] >= rep3["fp32_top1"] - 3.0
    assert rep3["fixops_quant"] < rep4["fixops_quant"]


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    args = ["run", "--json", "--epochs", "6", "--qat-epochs", "12", "--seed", "3"]
    full = json.loads(potlut(*args, "--out", str(tmp_path / "full")).stdout)

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "potlut", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env,
    )
    deadline = time.time() + 300
    while not (out / "qat.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "report.json").exists(), "run finished before it could be killed"
    done = len(load_checkpoint(out / "qat.ckpt")["history"]["epochs"])
    assert 1 <= done < 12

    resumed = json.loads(potlut(*args, "--out", str(out), "--resume").stdout)
    for key in ("fp32_top1", "quant_top1", "quant_top5", "fixops_quant"):
        assert resumed[key] == full[key], key
    a = load_checkpoint(tmp_path / "full" / "qat.ckpt")["model"]
    b = load_checkpoint(out / "qat.ckpt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_profit_run_freezes_layers_and_records_them(tmp_path):
    """`potlut run --scheme profit`: IOS-PoT QAT with PROFIT's progressive freezing."""
    from potlut.pipeline import RunConfig, run

    rep = run(RunConfig(scheme="profit", epochs=3, qat_epochs=6), tmp_path, progress=False)
    state = json.loads((tmp_path / "profit.json").read_text())
    assert state["frozen"] == state["order"][:2]  # 2 of 3 middle convs after 2/3 of QAT
    assert rep["scheme"] == "profit" and rep["bits"] == 4
    assert rep["int_top1"] == rep["quant_top1"]
    # the FP32 reference got the QAT epochs on top of the FP32 ones: 3 + 6 = 9
    assert rep["fp32_ref_epochs"] == 9 > rep["qat_epochs"] == 6
    assert len(rep["history"]["fp32_ref"]["epochs"]) == 6


def test_run_without_fp32_reference_reports_delta_against_the_start(tmp_path):
    from potlut.pipeline import RunConfig, run, summary_header

    rep = run(RunConfig(epochs=1, qat_epochs=1, fp32_ref=False), tmp_path, progress=False)
    assert rep["fp32_ref_top1"] is None and rep["delta_against"] == "fp32"
    assert rep["delta_top1"] == rep["delta_top1_vs_start"]
    assert "fp32_ref" not in rep["history"] and not (tmp_path / "fp32_ref.ckpt").exists()
    assert summary_header(rep) == ["metric", "FP32, 1 epoch", "4-bit iospot, 1 + 1 epochs"]
