"""The command line on an inference-only install: torch (and scikit-learn) made unimportable
in a fresh interpreter; ``inspect`` and ``infer --data npz:FILE`` work, training commands
say in one line what to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import potlut
from potlut.compress import save
from potlut.infer import IntEngine

from ..infer.helpers import random_graph

BLOCK = ("import sys\nfor m in ('torch', 'sklearn', 'matplotlib', 'PIL'):\n"
         "    sys.modules[m] = None  # import fails as if not installed\n"
         "from potlut.cli.main import main\nsys.argv = ['potlut', *sys.argv[1:]]\nmain()\n")


def potlut_without_torch(*args: str) -> subprocess.CompletedProcess:
    src = str(Path(potlut.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", BLOCK, *args], env=env, capture_output=True,
                          text=True, timeout=600)


def test_inspect_and_infer_run_without_torch(tmp_path: Path) -> None:
    graph = random_graph("small_cnn", (1, 8, 8), 4, seed=2)
    path = tmp_path / "m.potlut"
    save(graph, path)
    x = np.random.default_rng(0).normal(size=(50, 1, 8, 8)).astype(np.float32)
    logits = IntEngine(path, "numba").run(x)
    y = logits.argmax(1)
    y[:20] = (y[:20] + 1) % 10  # 30 of 50 right: Top-1 exactly 60 %
    np.savez(tmp_path / "test.npz", x=x, y=y)

    done = potlut_without_torch("infer", str(path), "--data", f"npz:{tmp_path / 'test.npz'}",
                                "--json", "--backend", "numba")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["images"] == 50 and out["int_top1"] == 60.0 and out["int_top5"] >= 60.0

    done = potlut_without_torch("inspect", str(path), "--json")
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    assert st["total"]["final_bytes"] == path.stat().st_size
    assert st["total"]["params"] == sum(np.prod(n.attrs["weight"]["shape"]) for n in graph.layers())


def test_training_commands_say_what_to_install(tmp_path: Path) -> None:
    save(random_graph("small_cnn", (1, 8, 8), 4, seed=2), tmp_path / "m.potlut")
    for args in (["run", "--epochs", "1"], ["infer", str(tmp_path / "m.potlut")],
                 ["compress", str(tmp_path)]):
        done = potlut_without_torch(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "potlut[train]" in lines[0], (args, done.stderr)
