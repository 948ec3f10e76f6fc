"""The engine equals the plain int64 reference element for element (both kernel backends),
and the reference equals the fake-quantized float model on every layer's codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from potlut.compress import decode, encode
from potlut.infer import IntEngine, lower, run_reference
from potlut.infer.kernels.cbackend import c_available
from potlut.infer.reference import quantize_float
from potlut.nn.export import to_torch

from .helpers import random_graph

BACKENDS = ["numba"] + (["c"] if c_available() else [])
CASES = [("small_cnn", (1, 8, 8)), ("resnet20", (3, 32, 32))]


@pytest.mark.parametrize("bits", [3, 4, 5])
@pytest.mark.parametrize("name,in_shape", CASES)
def test_engine_equals_reference(name, in_shape, bits) -> None:
    prog = lower(random_graph(name, in_shape, bits, seed=bits))
    torch.manual_seed(1)
    n = 1 if (name, bits) == ("resnet20", 5) else 2  # the per-product-rounding reference is slow
    x = torch.randn(n, *in_shape) * 1.5
    ref = run_reference(prog, x, keep=True)
    logits = ref[prog.outputs[0]]
    assert logits.shape == (n, 10) and np.abs(logits).max() > 2**prog.frac_bits // 100
    for backend in BACKENDS:
        engine = IntEngine(prog, backend)
        env = engine.run(x, keep=True)
        assert env[prog.outputs[0]].dtype == np.int32
        np.testing.assert_array_equal(env[prog.outputs[0]], logits)
        shared = [k for k in env if k in ref and k != "x_float"]
        assert len(shared) >= len(prog.layers())  # every layer's input codes at least
        for k in shared:
            np.testing.assert_array_equal(env[k], ref[k], err_msg=f"{backend} {k}")


def test_unsigned_activations_full_table_and_gather_path() -> None:
    """All b bits on post-ReLU magnitudes: whole (asymmetric) table, scalar gather kernel."""
    g = random_graph("small_cnn", (1, 8, 8), 4, act_signed=False)
    prog = lower(g)
    mid = [s for s in prog.layers() if s.mode == "plut"]
    assert all(not s.plut.symmetric and s.plut.entries.size == 8 * 16 for s in mid)
    x = torch.randn(3, 1, 8, 8)
    ref = run_reference(prog, x)
    for backend in BACKENDS:
        np.testing.assert_array_equal(IntEngine(prog, backend).run(x), ref)


def test_reference_matches_fake_quantized_model_codes() -> None:
    """Each layer's input codes in the reference are the float model's quantizer codes."""
    g = random_graph("resnet20", (3, 32, 32), 4, seed=4)
    back, _ = decode(encode(g)[0])  # through the file format
    prog = lower(back)
    model = to_torch(back)
    seen = {}
    for key, mod in model.layers.items():
        if hasattr(mod, "act_quant"):
            mod.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, i[0]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    env = run_reference(prog, x, keep=True)
    for st in prog.layers():
        want = quantize_float(seen[st.module.replace(".", "__")], st.act)
        np.testing.assert_array_equal(env[st.src], want, err_msg=st.name)
    logits = env[prog.outputs[0]].astype(np.float64) * prog.scale
    np.testing.assert_array_equal(logits, out.numpy())  # the grid eval forward: zero units
