"""Generated C, host build (gcc -std=c99 -Wall -Wextra -Werror -pedantic -O2): logits equal
the Python engine's int32 logits element for element on 64 inputs, for the digits CNN and
ResNet20 at 2-5 bits and every scheme the engine runs exactly; valgrind memcheck is clean."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from potlut.deploy.c_printer import print_c
from potlut.deploy.mcu_build import (
    build_host,
    memcheck_errors,
    run_host,
    write_harness,
    write_model,
)
from potlut.infer import IntEngine, lower
from potlut.infer.engine import quantize_input

from ..infer.helpers import random_graph

N = 64


def need(tool: str):
    """Skip without ``tool`` outside CI; in CI the test must run (and fail if it cannot)."""
    return pytest.mark.skipif(shutil.which(tool) is None and not os.environ.get("CI"),
                              reason=f"{tool} not installed")


def build_and_compare(prog, tmp_path, weights: str = "packed", n: int = N):
    """Host build of ``prog`` on ``n`` random inputs; returns (C logits, engine logits, exe)."""
    torch.manual_seed(7)
    x = (torch.randn(n, *prog.in_shape) * 1.5).numpy()
    cm = print_c(prog, "net", weights)
    write_model(cm, tmp_path)
    write_harness(cm, quantize_input(x, prog.steps[0].act), tmp_path)
    exe = build_host(cm, tmp_path)
    return run_host(exe, cm.out_size), IntEngine(prog).run(x), exe


@need("gcc")
@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_digits_cnn_equals_engine(bits, tmp_path) -> None:
    prog = lower(random_graph("small_cnn", (1, 8, 8), bits, seed=bits))
    got, want, _ = build_and_compare(prog, tmp_path, "shuff" if bits % 2 else "packed")
    assert got.shape == want.shape == (N, 10)
    assert np.abs(want).max() > 2**prog.frac_bits // 100  # not all zero
    np.testing.assert_array_equal(got, want)


@need("gcc")
@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_resnet20_equals_engine(bits, tmp_path) -> None:
    prog = lower(random_graph("resnet20", (3, 32, 32), bits, seed=bits))
    if bits == 5:  # 5-bit tables are rounded by a shift so accumulators stay in int32
        assert any(s.plut.shift > 0 for s in prog.layers() if s.plut is not None)
    got, want, _ = build_and_compare(prog, tmp_path, "shuff" if bits == 4 else "packed")
    assert got.shape == (N, 10)
    np.testing.assert_array_equal(got, want)


@need("gcc")
@pytest.mark.parametrize("scheme", ["iospot", "apot", "pact", "deepshift"])
def test_every_exact_scheme_equals_engine(scheme, tmp_path) -> None:
    prog = lower(random_graph("small_cnn", (1, 8, 8), 4, seed=2, scheme=scheme))
    got, want, _ = build_and_compare(prog, tmp_path)
    np.testing.assert_array_equal(got, want)


@need("gcc")
def test_unsigned_activations_equal_engine(tmp_path) -> None:
    prog = lower(random_graph("small_cnn", (1, 8, 8), 4, act_signed=False))
    got, want, _ = build_and_compare(prog, tmp_path, "shuff")
    np.testing.assert_array_equal(got, want)


@need("valgrind")
@pytest.mark.parametrize("name,shape,weights,n", [("small_cnn", (1, 8, 8), "packed", N),
                                                  ("small_cnn", (1, 8, 8), "shuff", N),
                                                  ("resnet20", (3, 32, 32), "shuff", 1)])
def test_valgrind_memcheck_reports_no_error(name, shape, weights, n, tmp_path) -> None:
    """Every step type (residual in place, shortcut, pooling, S-Huff decoding) under memcheck."""
    prog = lower(random_graph(name, shape, 3, seed=3))
    _, _, exe = build_and_compare(prog, tmp_path, weights, n=8)
    assert memcheck_errors(exe, n) == 0


@need("gcc")
@pytest.mark.parametrize("name,shape", [("small_cnn", (1, 8, 8)), ("resnet20", (3, 32, 32))])
def test_sanitizers_find_no_out_of_bounds_access(name, shape, tmp_path) -> None:
    """AddressSanitizer sees overflows of the static arena and tables (memcheck does not)."""
    prog = lower(random_graph(name, shape, 3, seed=3))
    torch.manual_seed(7)
    x = (torch.randn(2, *shape) * 1.5).numpy()
    cm = print_c(prog, "net", "shuff")
    write_model(cm, tmp_path)
    write_harness(cm, quantize_input(x, prog.steps[0].act), tmp_path)
    exe = build_host(cm, tmp_path, ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
    np.testing.assert_array_equal(run_host(exe, cm.out_size), IntEngine(prog).run(x))
