"""Where a C compiler and AVX2 exist, the C kernels are the ones that run: a build failure
must fail the tests, not fall back to numba silently (the other tests use BACKENDS)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from potlut.infer import IntEngine, lower, run_reference
from potlut.infer.kernels.cbackend import c_available

from .helpers import random_graph


def _flags() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.read_text() if cpuinfo.is_file() else ""


def _avx2() -> bool:
    return " avx2" in _flags()


def _avx512() -> bool:
    """AVX-512 F, BW and VBMI: what the native runner's widest path needs."""
    flags = _flags()
    return all(f in flags for f in (" avx512f", " avx512bw", " avx512vbmi"))


@pytest.mark.skipif(not os.environ.get("CI") and (not (shutil.which("gcc") or shutil.which("cc"))
                                                  or not _avx2()),
                    reason="needs a C compiler and an AVX2 CPU (always runs in CI)")
def test_c_kernels_build_and_are_the_default_backend() -> None:
    assert c_available()
    prog = lower(random_graph("small_cnn", (1, 8, 8), 4, seed=1))
    engine = IntEngine(prog)  # backend "auto"
    # the whole-network native runner of the widest instruction set this CPU has
    assert engine.backend.name == ("avx512" if _avx512() else "avx2")
    torch.manual_seed(0)
    x = torch.randn(3, 1, 8, 8)
    np.testing.assert_array_equal(engine.run(x), run_reference(prog, x))
