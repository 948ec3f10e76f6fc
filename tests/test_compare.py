"""``potlut compare`` end to end on digits, its resume, its errors and the paper configs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from potlut import data as data_mod
from potlut import models
from potlut.cli.compare import COMPARE_KEYS
from potlut.compare import BASELINES, DEFAULT_SCHEMES, JSON_KEYS, validate
from potlut.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = "10"  # FP32 and QAT epochs each: 9 trainings of ~12 steps an epoch on digits


def potlut(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "potlut", *args], capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    res = potlut("compare", "--data", "digits", "--bits", "4", "--epochs", EPOCHS,
                 "--qat-epochs", EPOCHS, "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    return out, json.loads(res.stdout)


@pytest.mark.slow
def test_every_scheme_within_three_points_of_fp32(digits_run):
    _, rows = digits_run
    start, fp = rows[0], rows[1]
    assert start["scheme"] == "fp32" and (start["bits_w"], start["bits_a"]) == (32, 32)
    # the reference trained as long as every quantized row: 10 + 10 epochs
    assert fp["scheme"] == "fp32_ref" and fp["method"] == "FP32, 20 epochs"
    assert start["method"] == "FP32, 10 epochs"
    assert fp["top1"] > 90 and start["top1"] > 90
    assert [r["scheme"] for r in rows[2:]] == DEFAULT_SCHEMES
    for r in rows[2:]:  # deltas are against the same-epochs reference: quantization alone
        assert r["delta_top1"] == pytest.approx(r["top1"] - fp["top1"], abs=1e-3)
    for r in rows:
        assert set(JSON_KEYS) <= set(r)
        if r["scheme"] == "srq":  # learns its bit-widths down, to 3 bits at the least
            assert 3 <= r["bits_w"] < 4 and r["top1"] >= fp["top1"] - 3, r
            continue
        assert r["top1"] >= fp["top1"] - 3, (r["scheme"], r["top1"], fp["top1"])


@pytest.mark.slow
def test_fixops_sizes_and_integer_only_flags(digits_run):
    _, rows = digits_run
    by = {r["scheme"]: r for r in rows}
    fp, ios, ds = by["fp32_ref"], by["iospot"], by["deepshift"]
    assert by["fp32"]["fixops"] == fp["fixops"] and by["fp32"]["weight_bytes"] == fp["weight_bytes"]
    assert (ios["bits_w"], ios["bits_a"]) == (4, 4)
    assert (ds["bits_w"], ds["bits_a"]) == (4, 8)
    assert ds["fixops"] > ios["fixops"]  # 8-bit activations cost DeepShift twice the middle MACs
    assert ios["fixops_rate"] == pytest.approx(fp["fixops"] / ios["fixops"], rel=1e-3)
    assert ios["weight_rate"] == pytest.approx(fp["weight_bytes"] / ios["weight_bytes"], rel=1e-3)
    # every 4-bit scheme stores the same weight bits; BM-float adds its shared exponents
    for s in ("apot", "deepshift", "pact", "lsq", "profit"):
        assert by[s]["weight_bytes"] == ios["weight_bytes"]
    assert by["bmfloat"]["weight_bytes"] > ios["weight_bytes"]
    # LQ-Net also stores its real basis: 4 FP32 values per output channel (32 + 64)
    assert by["lqnet"]["weight_bytes"] == ios["weight_bytes"] + (32 + 64) * 4 * 4
    assert {s for s, r in by.items() if not s.startswith("fp32") and not r["integer_only"]} == {
        "lqnet", "lsq", "bmfloat", "ls2", "alq"}
    assert all(by[s]["note"] for s in ("lqnet", "lsq", "bmfloat", "ls2", "alq"))
    # the related-work schemes: their own bit-widths, ALQ's average below one bit
    assert [(by[s]["bits_w"], by[s]["bits_a"]) for s in ("ls1", "ls2", "lst", "sq")] == [
        (1, 2), (2, 3), (2, 2), (2, 4)]
    assert by["ls1"]["weight_bytes"] < by["lst"]["weight_bytes"] < ios["weight_bytes"]
    assert 0 < by["alq"]["bits_w"] < 1.0
    assert by["alq"]["weight_bytes"] < by["ls1"]["weight_bytes"] * 1.2
    assert "progressive freezing froze 2 conv layers" in by["profit"]["note"]


@pytest.mark.slow
def test_tables_written_and_resume_skips_finished_schemes(digits_run):
    out, rows = digits_run
    md = (out / "compare.md").read_text()
    assert "| DeepShift-Q | 4/8 |" in md and "| FP32, 20 epochs | 32/32 |" in md
    assert "against the FP32 model trained 10 + 10 epochs" in md
    with (out / "compare.csv").open() as f:
        assert [r["scheme"] for r in csv.DictReader(f)] == ["fp32", "fp32_ref", *DEFAULT_SCHEMES]
    assert json.loads((out / "compare.json").read_text())["rows"] == rows
    row_files = sorted((out / "schemes").glob("*/row.json"))
    assert len(row_files) == len(DEFAULT_SCHEMES)
    stamps = [p.stat().st_mtime_ns for p in row_files]
    res = potlut("compare", "--data", "digits", "--bits", "4", "--epochs", EPOCHS,
                 "--qat-epochs", EPOCHS, "--out", str(out), "--json", "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    again = json.loads(res.stdout)
    assert [r["top1"] for r in again] == [r["top1"] for r in rows]
    assert [p.stat().st_mtime_ns for p in row_files] == stamps  # nothing retrained


@pytest.mark.parametrize("args, message", [
    (["--schemes", "iospot,nope"], "unknown quantization scheme 'nope'"),
    (["--bits", "4,x"], "'x' is not a valid int"),
    (["--schemes", "apot", "--bits", "8"], "APoT supports"),
    (["--bits", "9"], "bits must be an integer in 2..8"),
    (["--baseline-dist-loss", "always"], "distribution loss must be one of off, fixed"),
])
def test_user_errors_are_one_line_before_training(tmp_path, args, message):
    res = potlut("compare", "--out", str(tmp_path / "o"), *args)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and message in res.stderr
    assert not (tmp_path / "o" / "fp32.ckpt").exists()


def test_unknown_compare_key_in_config(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "small_cnn"\n[compare]\nschemes = ["iospot"]\nbitz = [4]\n')
    res = potlut("compare", "--config", str(cfg), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "unknown keys in [compare]: ['bitz']" in res.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("table[45]_*.toml")),
                         ids=lambda p: p.stem)
def test_paper_configs_are_valid(path):
    cfg, sections = load_config(path)
    comp = sections["compare"]
    assert set(comp) <= COMPARE_KEYS
    # the paper's tables: IOS-PoT and its baselines (the related-work rows are extra)
    assert comp["bits"] == [3, 4, 5] and comp["schemes"] == ["iospot", *BASELINES]
    validate(cfg, comp["schemes"], comp["bits"])
    assert cfg.model in models.names()
    assert cfg.data.partition(":")[0] in {"cifar10", "cifar100"}
    assert cfg.data.partition(":")[0] in data_mod._LOADERS


def test_three_paper_configs_exist():
    names = {p.stem for p in (ROOT / "configs").glob("table[45]_*.toml")}
    assert names == {"table4_resnet20_cifar10", "table4_resnet56_cifar10",
                     "table5_resnet18_cifar100"}


def test_int_top1_per_scheme_or_the_reason_why_not(digits_run):
    """The integer engine's Top-1 on each written file; None with the reason where refused."""
    _, rows = digits_run
    by = {r["scheme"]: r for r in rows}
    assert by["fp32"]["int_top1"] is None and by["fp32_ref"]["int_top1"] is None
    for s in ("iospot", "apot", "deepshift", "pact"):  # the engine equals fake quantization
        assert by[s]["int_top1"] == by[s]["top1"], (s, by[s])
    for s in ("lsq", "bmfloat"):
        assert by[s]["int_top1"] is None and "cannot run integer-only" in by[s]["note"]
    # LQ-Net's per-channel bases: 32 channels x 8 magnitudes = 256 weight codes > 8 bits
    assert by["lqnet"]["int_top1"] is None and "256 weight codes" in by["lqnet"]["note"]
    for s in ("ls1", "ls2", "lst", "sq", "esb", "srq"):  # exact integer products
        assert by[s]["int_top1"] == by[s]["top1"], (s, by[s])
    for s in ("ls1", "ls2", "lst"):  # and the popcount path equals the int64 reference
        assert by[s]["engine"].endswith("(bitwise)")
        assert "equal to the int64 reference on 256 test images" in by[s]["note"]
    assert by["alq"]["int_top1"] is None and by["alq"]["engine"] == "refused"
    assert "own real basis" in by["alq"]["note"]


def test_unsigned_acts_and_no_fp32_ref_options(tmp_path):
    """``--unsigned-acts`` reaches every scheme's config; ``--no-fp32-ref`` drops the
    reference row, and Δ is then against the start model."""
    res = potlut("compare", "--schemes", "lsq", "--epochs", "1", "--qat-epochs", "1",
                 "--unsigned-acts", "--no-fp32-ref", "--out", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(res.stdout)
    assert [r["scheme"] for r in rows] == ["fp32", "lsq"]
    assert rows[1]["delta_top1"] == pytest.approx(rows[1]["top1"] - rows[0]["top1"], abs=1e-3)
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["config"]["act_signed"] is False and saved["config"]["fp32_ref"] is False
    md = (tmp_path / "compare.md").read_text()
    assert "against the 1-epoch FP32 model QAT started from" in md
