"""Generated Verilog, simulated with Icarus: P-LUT and SHIFT PEs, KxK window units, the S-Huff
decoder block and the layer engine equal the integer engine bit for bit at 3, 4 and 5 bits."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from potlut import data
from potlut.cli.main import app
from potlut.compress import load
from potlut.deploy.rtl_layer import simulate_layer
from potlut.deploy.rtl_pe import RtlError, iospot_spec, layer_spec, pe_name, pe_verilog
from potlut.deploy.rtl_shuff import (
    coded_layer,
    decoder_tb,
    decoder_verilog,
    sign_bits,
    stream_words,
)
from potlut.deploy.rtl_sim import (
    expected_stream,
    ints,
    layer_windows,
    run_sim,
    simulate_stream,
)
from potlut.deploy.rtl_window import window_name, window_verilog
from potlut.infer.program import lower
from potlut.infer.reference import accumulate, run_reference
from potlut.nn.export import compress_model
from potlut.pipeline import RunConfig, load_quantized, run

TOOLS = ("iverilog", "vvp", "yosys")
if not all(shutil.which(t) for t in TOOLS):  # CI installs them (.ci/run): there it must run
    if os.environ.get("CI"):
        raise RuntimeError(f"CI needs {', '.join(TOOLS)} on PATH")
    pytest.skip("iverilog/yosys not installed", allow_module_level=True)

BITS = (3, 4, 5)
LAYER = "features.3"  # 16 -> 32 channels, 3x3, stride 2: 144 P-LUT products per output


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Briefly trained digits models at 3/4/5 bits: {bits: (path, layer, input codes [N,C,H,W],
    engine accumulators [N, O, OH*OW])} for two test images."""
    torch.set_num_threads(1)
    bundle = data.load("digits")
    x = torch.stack([bundle.test[i][0] for i in range(2)]).numpy()
    out = {}
    for bits in BITS:
        d = tmp_path_factory.mktemp(f"digits{bits}")
        cfg = RunConfig(epochs=1, qat_epochs=1, seed=0, device="cpu", bits=bits)
        run(cfg, d, progress=False)
        path = d / "m.potlut"
        compress_model(load_quantized(d, cfg), bundle.in_shape, path)
        prog = lower(load(path))
        layer = next(st for st in prog.layers() if st.module == LAYER)
        env = run_reference(prog, x, keep=True)
        acc = np.asarray(accumulate(layer, env[layer.src]))
        out[bits] = (path, prog, layer, np.asarray(env[layer.src]), acc)
    return out


def _random_codes(rng, spec, shape):
    """Signed codes, negative zero included (the hardware must read it as 0)."""
    return rng.integers(0, 2 << spec.kbits, size=shape)


@pytest.mark.parametrize("bits", BITS)
def test_pe_and_window_units_equal_the_engine_on_random_vectors(bits, tmp_path) -> None:
    rng = np.random.default_rng(bits)
    for kind in ("plut", "shift"):
        spec = iospot_spec(bits, 40)
        w, a = _random_codes(rng, spec, (30, 40, 1)), _random_codes(rng, spec, (30, 40, 1))
        got = simulate_stream(pe_verilog(spec, kind), pe_name(spec, kind), spec, w, a, tmp_path)
        exp = expected_stream(spec, w, a)
        assert np.array_equal(got, exp), (kind, bits)
        for k in (3, 5, 7):
            spec = iospot_spec(bits, k * k * 6)
            w = _random_codes(rng, spec, (8, 6, k * k))
            a = _random_codes(rng, spec, (8, 6, k * k))
            if k == 3:  # the worst case: every product at the largest entry, one sign
                top = (1 << spec.kbits) - 1
                w[0], a[0] = top, top
                w[1], a[1] = top | (1 << spec.kbits), top
            got = simulate_stream(window_verilog(spec, kind, k), window_name(spec, kind, k),
                                  spec, w, a, tmp_path)
            exp = expected_stream(spec, w, a)
            assert np.array_equal(got, exp), (kind, bits, k)
            if k == 3:
                assert exp[0] == spec.max_entry * k * k * 6 == -exp[1]


@pytest.mark.parametrize("bits", BITS)
def test_units_and_layer_engine_equal_the_engine_on_a_real_digits_layer(digits, bits,
                                                                        tmp_path) -> None:
    path, _, layer, codes, acc = digits[bits]
    spec = layer_spec(layer)
    assert spec.plut.symmetric and spec.bits == bits
    exp = acc[0].reshape(-1)  # [O * OH*OW] for image 0
    assert np.abs(exp).max() > 0
    w, a = layer_windows(layer, codes[0])
    assert w.shape == (32 * 16, 16, 9)
    for kind in ("plut", "shift"):
        win = simulate_stream(window_verilog(spec, kind, 3), window_name(spec, kind, 3), spec,
                              w, a, tmp_path)
        assert np.array_equal(win, exp), (kind, "window")
        n = 64  # the single PE: 64 outputs x 144 products, one product per cycle
        pe = simulate_stream(pe_verilog(spec, kind), pe_name(spec, kind), spec,
                             w[:n].reshape(n, -1, 1), a[:n].reshape(n, -1, 1), tmp_path)
        assert np.array_equal(pe, exp[:n]), (kind, "pe")
    # the layer engine: weights decoded from the file's S-Huff stream, image 1's codes
    got, cycles = simulate_layer(path, layer, codes[1], "plut", tmp_path / "engine")
    assert np.array_equal(got, acc[1])
    # one weight code per cycle while loading, one input channel per cycle while running
    n_out, n_in, oh_ow = 32, 16, 16
    least = n_out * n_in * 9 + n_out * oh_ow * n_in
    assert least <= cycles <= least + 4 * n_out + 8


@pytest.mark.parametrize("bits", BITS)
def test_shuff_decoder_block_reproduces_every_code_of_a_real_layer(digits, bits,
                                                                   tmp_path) -> None:
    path, prog, _, _, _ = digits[bits]
    module = "features.6"  # the largest P-LUT layer: 64 x 32 x 3 x 3 weights
    cl = coded_layer(path, module)
    (tmp_path / "w.hex").write_text("\n".join(stream_words(cl)) + "\n")
    (tmp_path / "s.bin").write_text("\n".join(sign_bits(cl)) + "\n")
    (tmp_path / "dec.v").write_text(decoder_verilog(cl, "w.hex", "s.bin"))
    (tmp_path / "tb.v").write_text(decoder_tb(cl))
    lines = run_sim([tmp_path / "tb.v", tmp_path / "dec.v"], "tb", tmp_path)
    layer = next(st for st in prog.layers() if st.module == module)
    exp = layer.signed_weight_codes().reshape(-1).astype(np.int64)
    got = ints(lines, "SYM")
    assert got.size == exp.size == 64 * 32 * 9
    assert np.array_equal(got, exp)
    assert int(ints(lines, "CYCLES")[0]) == exp.size + 2  # one symbol a cycle after 2 fills
    assert int(cl.lengths.max()) > 1  # a real Huffman code, not a fixed-length one


def test_a_4_bit_plut_pe_synthesizes_to_fewer_luts_than_the_shift_pe(tmp_path) -> None:
    from potlut.deploy.rtl_synth import synth_xilinx

    spec = iospot_spec(4, 144)
    luts = {}
    for kind in ("plut", "shift"):
        src = tmp_path / f"{kind}.v"
        src.write_text(pe_verilog(spec, kind))
        st = synth_xilinx(src, pe_name(spec, kind), tmp_path)
        assert st.ff == 2 * spec.bits + 3 + spec.acc_bits + 1  # operand/control regs, acc, valid
        assert st.mem_bits == 0
        luts[kind] = st.lut
    assert 0 < luts["plut"] < luts["shift"]


def test_cli_export_rtl_writes_a_simulatable_layer_and_rejects_bad_input(digits,
                                                                         tmp_path) -> None:
    path = digits[4][0]
    out = tmp_path / "rtl"
    res = CliRunner().invoke(app, ["export-rtl", str(path), "--layer", LAYER, "--out", str(out),
                                   "--pe", "shift", "--image", "3"])
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in out.iterdir())
    assert "shift_layer_features_3.v" in files and "tb_shift_layer_features_3.v" in files
    lines = run_sim([out / "tb_shift_layer_features_3.v", out / "shift_layer_features_3.v"],
                    "tb", out)
    assert ints(lines, "ACC").size == 32 * 16
    res = CliRunner().invoke(app, ["export-rtl", str(path), "--layer", "fc", "--out",
                                   str(out)])
    assert res.exit_code == 2
    assert "not a symmetric P-LUT layer" in res.output
    with pytest.raises(RtlError):
        window_verilog(iospot_spec(4, 9), "mult", 3)
