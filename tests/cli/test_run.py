"""`potlut run`: every user error is one line on stderr and exit code 2, before any work."""

from pathlib import Path

import pytest

from ..test_pipeline import potlut


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "9"], "bits must be an integer in 2..8"),
        (["--bits", "1"], "bits must be an integer in 2..8"),
        (["--scheme", "fancy"], "unknown quantization scheme 'fancy'"),
        (["--model", "vgg99"], "unknown model 'vgg99'"),
        (["--data", "mnist:/nonexistent/folder"], "no such folder"),
        (["--data", "imagenet-1k"], "unknown data set"),
        (["--dist-loss", "maybe"], "distribution loss mode"),
        (["--epochs", "0"], "epochs must be >= 1"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, args, message):
    out = tmp_path / "out"
    proc = potlut("run", "--out", str(out), *args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "report.json").exists()


def test_unreadable_checkpoint_on_resume(tmp_path):
    (tmp_path / "fp32.ckpt").write_bytes(b"\x00garbage" * 10)
    proc = potlut("run", "--out", str(tmp_path), "--resume", check=False)
    assert proc.returncode == 2
    assert "unreadable checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "report.json").exists()


def test_malformed_mnist_folder(tmp_path):
    import numpy as np

    from potlut.data.idx import FILES, write_idx

    for key, stem in FILES.items():
        write_idx(tmp_path / stem, np.zeros((5, 4) if key.endswith("images") else (5,), np.uint8))
    proc = potlut("run", "--data", f"mnist:{tmp_path}", "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2
    assert "has 2 dimensions, expected 3" in proc.stderr
    assert not (Path(tmp_path) / "o" / "report.json").exists()
