"""A .potlut file runs without torch: a fresh interpreter that imports only the format and
the engine loads the file, runs it bit-exactly, and never loads torch or training code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import potlut
from potlut.compress import save
from potlut.infer import IntEngine, lower

from .helpers import random_graph

CHILD = """
import json, sys
import numpy as np
import potlut, potlut.compress, potlut.infer

path, xfile, outfile = sys.argv[1:]
x = np.load(xfile)
graph = potlut.load(path)
np.save(outfile, potlut.engine(path, "numba").run(x))
np.save(outfile + ".ref.npy", potlut.infer.run_reference(potlut.infer.lower(graph), x))
mods = ("torch", "potlut.train", "potlut.nn", "potlut.data", "potlut.models", "potlut.quant",
        "sklearn")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in mods or
                        any(m == p or m.startswith(p + ".") for p in mods))))
"""


def test_file_runs_in_a_fresh_interpreter_without_torch(tmp_path: Path) -> None:
    graph = random_graph("resnet20", (3, 32, 32), 4, seed=3)
    save(graph, tmp_path / "m.potlut")
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    want = IntEngine(lower(graph), "numba").run(x)
    src = str(Path(potlut.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "m.potlut"), str(tmp_path / "x.npy"),
         str(tmp_path / "out.npy")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    got = np.load(tmp_path / "out.npy")
    assert got.dtype == np.int32 and got.shape == (2, 10)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy.ref.npy"), want)
