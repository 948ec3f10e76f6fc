"""Killed runs resume exactly: a `potlut run` of a model with dropout, SIGKILLed once in the
FP32 stage and once in the QAT stage, ends with weights bit-identical to an uninterrupted
run (every random generator is in the checkpoint; the seed is not re-applied on resume)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from potlut.train.checkpoint import load_checkpoint

SCRIPT = Path(__file__).with_name("dropout_potlut.py")
ARGS = ["run", "--json", "--model", "dropout_cnn", "--epochs", "5", "--qat-epochs", "5",
        "--seed", "7"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, str(SCRIPT), *ARGS, "--out", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)


def _kill_after_checkpoint(proc: subprocess.Popen, ckpt: Path) -> int:
    """SIGKILL ``proc`` once ``ckpt`` exists; return the epochs that checkpoint holds."""
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(load_checkpoint(ckpt)["history"]["epochs"])


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def test_kill_in_fp32_and_in_qat_then_resume_is_bit_identical(tmp_path) -> None:
    full = tmp_path / "full"
    _finish(_start(full))

    out = tmp_path / "killed"
    done = _kill_after_checkpoint(_start(out), out / "fp32.ckpt")
    assert 1 <= done < 5 and not (out / "qat.ckpt").exists()  # killed inside the FP32 stage
    done = _kill_after_checkpoint(_start(out, "--resume"), out / "qat.ckpt")
    assert 1 <= done < 5  # killed inside the QAT stage
    assert not (out / "report.json").exists()
    _finish(_start(out, "--resume"))

    for name in ("fp32.ckpt", "qat.ckpt"):
        a, b = load_checkpoint(full / name)["model"], load_checkpoint(out / name)["model"]
        assert sorted(a) == sorted(b)
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert different == [], (name, different)


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path) -> None:
    """torch, numpy and Python generators continue where the saved state left them."""
    import random

    import numpy as np

    from potlut.train.checkpoint import restore_rng, rng_state, save_checkpoint

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "c.ckpt", {"model": {}, "rng": rng_state()})
    first = (torch.rand(5), np.random.standard_normal(5), [random.random() for _ in range(5)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restore_rng(load_checkpoint(tmp_path / "c.ckpt")["rng"])
    again = (torch.rand(5), np.random.standard_normal(5), [random.random() for _ in range(5)])
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]
