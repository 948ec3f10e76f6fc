"""`potlut run --bits 2,3`: one switchable model, one multi-bit file; infer/inspect/compress."""

import json

from ..test_pipeline import potlut


def test_run_infer_inspect_compress_several_widths(tmp_path):
    out = tmp_path / "run"
    proc = potlut("run", "--bits", "3,2", "--epochs", "2", "--qat-epochs", "1", "--out",
                  str(out), "--json")
    rep = json.loads(proc.stdout)
    assert rep["widths"] == [2, 3] and set(rep["per_width"]) == {"2", "3"}
    assert rep["file_bytes"] < rep["separate_bytes"]
    for b in ("2", "3"):  # the engine on the file agrees with the fake-quantized model
        assert rep["int_top1"][b] == rep["per_width"][b]["quant_top1"]
        assert rep["per_width"][b]["quant_top1"] > 50.0
    model = out / "model.potlut"
    got = json.loads(potlut("infer", str(model), "--bits", "2", "--json").stdout)
    assert got["bits"] == 2 and got["int_top1"] == rep["int_top1"]["2"]
    st = json.loads(potlut("inspect", str(model), "--json").stdout)
    assert st["file_bytes"] == model.stat().st_size and st["widths"] == [2, 3]
    assert st["separate_bytes"] == rep["separate_bytes"]
    again = tmp_path / "again.potlut"
    made = json.loads(potlut("compress", str(out), "-o", str(again), "--json").stdout)
    assert made["file"] == str(again) and made["file_bytes"] == again.stat().st_size
    assert again.read_bytes() == model.read_bytes()  # the checkpoint gives the same file
    bad = potlut("infer", str(model), "--bits", "4", check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "holds bit-widths 2,3, not 4" in bad.stderr


def test_bad_width_lists_are_one_line_errors(tmp_path):
    for bits, message in (("2,x", "integers separated by commas"),
                          ("2,9", "bits must be an integer in 2..8")):
        proc = potlut("run", "--bits", bits, "--out", str(tmp_path / "o"), check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    proc = potlut("run", "--bits", "2,4", "--scheme", "alq", "--out", str(tmp_path / "o"),
                  check=False)
    assert proc.returncode == 2 and "own training schedule" in proc.stderr
