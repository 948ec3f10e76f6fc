"""The lowering (integer codebooks, multipliers, shifts, thresholds) against the float
fake-quantized model, for every bit-width 2..8 of every scheme the engine runs exactly:
each layer's input codes are the float quantizer's codes, the logits are the float model's
(on the engine's grid, nn/grid.py: zero units apart), the argmax is equal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from potlut.infer import IntEngine, UnsupportedModelError, lower
from potlut.infer.reference import quantize_float
from potlut.nn.export import export_graph, to_torch
from potlut.quant.sq import sq_quantizers

from .helpers import random_graph, random_qmodel

# (scheme, bits) the engine refuses, with the reason it names: b-bit power-of-two levels span
# 2^(2^(b-1) - 2), beyond any exact int32 table and accumulator above 5 bits (2^30 at 6 bits,
# 2^126 at 8: float32 itself flushes their products to zero); DeepShift's int8 MAC path takes
# weights up to 2^6 (its 5-bit weights reach 2^14)
REFUSED = {("iospot", b): rf"activation: power-of-two levels span 2\^{2 ** (b - 1) - 2}\b"
           for b in (6, 7, 8)}
REFUSED |= {("deepshift", 5): r"weights wider than 8 bits .*largest weight 16384"}
REFUSED |= {("deepshift", b): rf"weight: power-of-two levels span 2\^{2 ** (b - 1) - 2}\b"
             for b in (6, 7, 8)}
# ESB's activation levels above 5 bits are not integers times one scale
REFUSED |= {("esb", b): r"codebook of scheme 'esb' is not integers times one scale"
            for b in (6, 7, 8)}
EXACT_SCHEMES = ("iospot", "deepshift", "apot", "pact", "fixedpoint", "ls1", "lst", "esb",
                 "srq", "sq")
CASES = [(s, b) for s in EXACT_SCHEMES for b in range(2, 9)
         if (s, b) != ("apot", 8)]  # APoT defines 2..7 bits for signed tensors


def _graph(scheme: str, bits: int):
    if scheme != "sq":
        return random_graph("small_cnn", (1, 8, 8), bits, seed=bits, scheme=scheme)
    q = random_qmodel("small_cnn", (1, 8, 8), bits, seed=bits, scheme=scheme)
    for m in sq_quantizers(q):  # the end of SQ's schedule: every filter quantized
        m.ratio.fill_(1.0)
    return export_graph(q, (1, 8, 8))


def _case(scheme: str, bits: int):
    return pytest.param(scheme, bits, id=f"{scheme}-{bits}")


@pytest.mark.parametrize(("scheme", "bits"), [_case(s, b) for s, b in CASES])
def test_lowering_matches_the_float_model(scheme, bits) -> None:
    g = _graph(scheme, bits)
    if (scheme, bits) in REFUSED:
        with pytest.raises(UnsupportedModelError, match=REFUSED[(scheme, bits)]):
            lower(g)
        return
    prog = lower(g)
    assert prog.exact
    model = to_torch(g)
    seen = {}
    for key, mod in model.layers.items():
        if hasattr(mod, "act_quant"):
            mod.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, i[0]))
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8) * 1.5
    with torch.no_grad():
        fq = model(x).double().numpy()
    env = IntEngine(prog, "numba").run(x, keep=True)
    for st in prog.layers():
        want = quantize_float(seen[st.module.replace(".", "__")], st.act)
        assert int((env[st.src] != want).sum()) == 0, st.name
    logits = env[prog.outputs[0]].astype(np.float64) * prog.scale
    np.testing.assert_array_equal(logits, fq)  # the eval forward is on the engine's grid
    assert np.array_equal(logits.argmax(1), fq.argmax(1))
