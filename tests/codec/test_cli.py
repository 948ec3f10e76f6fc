"""`potlut codec ...`: encode -> file -> decode -> truncate, and one-line user errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from potlut.cli.main import app
from potlut.codec.encode import encode


def _run(*args):
    return CliRunner().invoke(app, ["codec", *map(str, args)])


def test_encode_decode_truncate(tiny, photo, tmp_path):
    model, ckpt = tiny
    Image.fromarray(photo).save(tmp_path / "in.png")
    res = _run("encode", tmp_path / "in.png", "-o", tmp_path / "x.rnnc", "--model", ckpt,
               "--iterations", 3)
    assert res.exit_code == 0, res.output
    size = (tmp_path / "x.rnnc").stat().st_size
    assert f"{size} bytes = {8 * size / (64 * 96):.4f} bpp (96x64)" in res.stdout
    enc = encode(model, photo, iterations=3)
    assert (tmp_path / "x.rnnc").read_bytes() == enc.data
    assert _run("truncate", tmp_path / "x.rnnc", "-o", tmp_path / "y.rnnc",
                "--iterations", 2).exit_code == 0
    assert _run("decode", tmp_path / "y.rnnc", "-o", tmp_path / "y.png",
                "--model", ckpt).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "y.png")), enc.images[1])


@pytest.mark.parametrize(("args", "message"), [
    (["encode", "IMG", "-o", "o.rnnc", "--model", "CKPT"], "exactly one of --bpp"),
    (["encode", "IMG", "-o", "o.rnnc", "--model", "CKPT", "--quality", "2"], "SSIM target"),
    (["encode", "IMG", "-o", "o.rnnc", "--model", "CKPT", "--iterations", "9"],
     "iterations must be in 1..4"),
    (["encode", "IMG", "-o", "o.rnnc", "--model", "CKPT", "--bpp", "0.001"],
     "below this model's one-iteration rate"),
    (["encode", "IMG", "-o", "o.rnnc", "--model", "GARBAGE", "--bpp", "1"],
     "unreadable checkpoint"),
    (["decode", "GARBAGE", "-o", "o.png", "--model", "CKPT"], "bad magic"),
    (["decode", "missing.rnnc", "-o", "o.png", "--model", "CKPT"], "cannot read"),
    (["truncate", "GARBAGE", "-o", "o.rnnc", "--iterations", "1"], "bad magic"),
    (["eval", "nowhere", "--model", "CKPT"], "no such folder"),
])
def test_user_errors_one_line_exit_2(tiny, photo, tmp_path, args, message):
    _, ckpt = tiny
    Image.fromarray(photo).save(tmp_path / "in.png")
    (tmp_path / "garbage").write_bytes(b"\x00garbage" * 10)
    sub = {"IMG": tmp_path / "in.png", "CKPT": ckpt, "GARBAGE": tmp_path / "garbage",
           "missing.rnnc": tmp_path / "missing.rnnc", "nowhere": tmp_path / "nowhere"}
    res = _run(*[sub.get(a, tmp_path / a if a.startswith("o.") else a) for a in args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
