"""Codebook schemes other than IOS-PoT on the integer engine: DeepShift, APoT and PACT run
exactly (engine == int64 reference; tables are integer products of the two codebooks),
LQ-Net runs with its approximation reported, LSQ+ and BM-float are refused in one line;
briefly trained digits models agree with their fake-quantized float models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from potlut import data
from potlut.evaluation import int_logits
from potlut.infer import IntEngine, UnsupportedModelError, lower, run_reference
from potlut.infer.kernels.cbackend import c_available
from potlut.infer.plut import APPROX_BITS
from potlut.pipeline import MODEL_FILE, RunConfig, load_quantized, run

from .helpers import random_graph

BACKENDS = ["numba"] + (["c"] if c_available() else [])
EXACT = ["deepshift", "apot", "pact"]


@pytest.mark.parametrize("scheme", EXACT)
def test_engine_equals_reference_exactly(scheme) -> None:
    g = random_graph("small_cnn", (1, 8, 8), 4, seed=2, scheme=scheme)
    prog = lower(g)
    assert prog.exact and prog.approximations() == []
    modes = [st.mode for st in prog.layers()]
    assert modes == (["int8"] * 4 if scheme == "deepshift" else ["int8", "plut", "plut", "int8"])
    for st in prog.layers():
        mod = st.module
        wcb = g.arrays[f"{mod}.weight.codebook"].astype(np.float64)
        acb = g.arrays[f"{mod}.act.codebook"].astype(np.float64)
        # the integers are the codebooks up to float32 storage: one real step each
        w_step = wcb.max() / st.w_values.max()
        a_step = acb.max() / st.act.values.max()
        np.testing.assert_allclose(st.w_values * w_step, wcb, rtol=0, atol=wcb.max() * 2**-22)
        np.testing.assert_allclose(st.act.values * a_step, acb, rtol=0, atol=acb.max() * 2**-22)
        if st.plut is not None:  # the table: integer codebook products, nothing rounded
            assert st.plut.shift == 0
            np.testing.assert_array_equal(
                st.plut.table(), np.multiply.outer(st.w_values, st.act.values))
    low = prog.layers()[1]
    if scheme == "apot":  # 4-bit APoT: {0, 2^-1, 2^-2, 2^-4} + {0, 2^-3}, in 16ths
        assert low.w_values.tolist() == [0, 1, 2, 3, 4, 6, 8, 10]
        assert low.plut.symmetric and low.plut.entries.size == 8 * 9 // 2
    if scheme == "pact":  # DoReFa odd levels (2i+1)/15 x PACT j/7
        assert low.w_values.tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
        assert low.act.values.tolist() == list(range(8))
        assert not low.plut.symmetric and not low.requant.shift_only
    torch.manual_seed(3)
    x = torch.randn(4, 1, 8, 8) * 1.5
    ref = run_reference(prog, x)
    assert np.abs(ref).max() > 2**prog.frac_bits // 100
    for backend in BACKENDS:
        np.testing.assert_array_equal(IntEngine(prog, backend).run(x), ref)


def test_lqnet_runs_approximately_and_says_so() -> None:
    prog = lower(random_graph("small_cnn", (1, 8, 8), 4, seed=2, scheme="lqnet_layer"))
    approx = prog.approximations()
    assert not prog.exact and [a["layer"] for a in approx] == ["features.3", "features.6"]
    for a, st in zip(approx, prog.layers()[1:3], strict=True):
        assert not a["weight_exact"] and not a["act_exact"]
        # rounding to 12-bit fixed point: at most half a step of the largest level
        assert 0 < a["act_max_err"] <= st.act.mult / 2 * (1 + 1e-6)
        assert int(st.act.values.max()) == 2**APPROX_BITS - 1
    x = torch.randn(3, 1, 8, 8)
    ref = run_reference(prog, x)
    for backend in BACKENDS:
        np.testing.assert_array_equal(IntEngine(prog, backend).run(x), ref)


@pytest.mark.parametrize("scheme,why", [("lsq", "real offset beta"),
                                        ("bmfloat", "exponent per block")])
def test_schemes_without_integer_form_are_refused(scheme, why) -> None:
    g = random_graph("small_cnn", (1, 8, 8), 4, seed=2, scheme=scheme)
    with pytest.raises(UnsupportedModelError, match=f"'{scheme}' cannot run integer-only.*{why}"):
        lower(g)


@pytest.mark.parametrize("scheme", EXACT)
def test_digits_engine_agrees_with_fake_quantized_model(scheme, tmp_path) -> None:
    cfg = RunConfig(scheme=scheme, epochs=8, qat_epochs=8, seed=0, device="cpu")
    report = run(cfg, tmp_path, progress=False)
    torch.set_num_threads(1)
    qmodel = load_quantized(tmp_path, cfg).eval()
    bundle = data.load("digits")
    engine = IntEngine(tmp_path / MODEL_FILE)
    assert engine.program.exact
    logits, labels = int_logits(engine, bundle.test)
    x = torch.stack([bundle.test[i][0] for i in range(len(bundle.test))])
    with torch.no_grad():
        fq = qmodel(x).numpy()
    fq_top1 = 100 * np.mean(fq.argmax(1) == labels)
    agree = np.mean(logits.argmax(1) == fq.argmax(1))
    print(f"{scheme}: fake-quant top1 {fq_top1:.2f}, engine top1 "
          f"{100 * np.mean(logits.argmax(1) == labels):.2f}, agreement {100 * agree:.2f}%")
    assert fq_top1 > 80  # trained, not chance
    assert agree == 1.0  # exact schemes: the same class on every test image
    # the eval forward computes the engine's numbers (nn/grid.py): the same integers in
    # units of 2^-F (DeepShift once had one image 15,616 units off: a float32 BatchNorm
    # output landed exactly on a midpoint that the exact value lies below; APoT and PACT
    # 3-4 of 540 images while their real steps and the 24-bit multiplier rounded)
    np.testing.assert_array_equal(logits, fq / engine.scale)
    assert report["int_top1"] == pytest.approx(100 * np.mean(logits.argmax(1) == labels), abs=1e-3)
