"""Each scheme's facts are declared once (potlut.schemes) and the quantizers, the engine and
compare follow them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from potlut import schemes
from potlut.errors import PotlutConfigError
from potlut.infer import UnsupportedModelError, lower
from potlut.infer.plut import fixed_codebook
from potlut.quant import registry
from potlut.schemes import Method, parse_method

from .infer.helpers import random_graph


def test_every_declared_scheme_has_a_quantizer_of_that_name() -> None:
    assert registry.names() == sorted(schemes.SCHEMES)
    for name, facts in schemes.SCHEMES.items():
        assert registry.get(name).facts is facts
        for role in ("weight", "act"):
            assert registry.make(name, 4, role).scheme == name
        # a scheme the engine refuses or approximates is not integer-only, and vice versa
        assert facts.integer_only == (facts.engine in (schemes.EXACT, schemes.INT8)), name
        assert bool(facts.engine_note) == (facts.engine in (schemes.REFUSED,
                                                            schemes.APPROXIMATE)), name


def test_profit_is_a_training_method_around_a_scheme() -> None:
    assert parse_method("profit") == Method(schemes.get("iospot"), profit=True)
    assert parse_method("profit:lsq") == Method(schemes.get("lsq"), profit=True)
    assert parse_method("apot") == Method(schemes.get("apot"))
    assert parse_method("profit:lsq").label == "LSQ+ + progressive freezing"
    for bad in ("profit:nope", "apot:lsq", "profit:profit", "fp16"):
        with pytest.raises(PotlutConfigError):
            parse_method(bad)


def test_engine_follows_the_declared_facts() -> None:
    cb = np.array([0.0, 0.25, 0.5, 0.75], dtype=np.float32)
    for name in ("lsq", "bmfloat"):  # refused with the declared reason
        with pytest.raises(UnsupportedModelError) as err:
            fixed_codebook(cb, name, "layer x")
        assert schemes.get(name).engine_note in str(err.value)
    real = np.array([0.0, 0.31415927, 0.7182818, 1.4142135], dtype=np.float32)  # no integer form
    approx = fixed_codebook(real, "lqnet", "layer x")
    assert not approx.exact and 0 < approx.max_err <= real.max() / 4095 / 2  # half a step
    with pytest.raises(UnsupportedModelError):
        fixed_codebook(real, "apot", "layer x")  # exact schemes are never rounded


def test_files_that_say_fixed_run_as_fixedpoint() -> None:
    """The first/last layers' scheme was called "fixed" (also a distribution-loss mode)."""
    g = random_graph("small_cnn", (1, 8, 8), 4, seed=5)
    ends = [n for n in g.layers() if n.attrs["weight"]["scheme"] == "fixedpoint"]
    assert len(ends) == 2 and all(n.attrs["act"]["scheme"] == "fixedpoint" for n in ends)
    old = type(g)(g.in_shape, [type(n)(n.name, n.op, n.inputs, _renamed(n.attrs))
                               for n in g.nodes], g.arrays, g.meta)
    new_prog, old_prog = lower(g), lower(old)
    assert [s.mode for s in old_prog.layers()] == [s.mode for s in new_prog.layers()]
    assert [s.act.fmt for s in old_prog.layers()][0] == "int"
    x = torch.randn(3, 1, 8, 8)
    from potlut.infer import IntEngine

    np.testing.assert_array_equal(IntEngine(old_prog, "numba").run(x),
                                  IntEngine(new_prog, "numba").run(x))


def _renamed(attrs: dict) -> dict:
    out = dict(attrs)
    for key in ("weight", "act"):
        if isinstance(out.get(key), dict) and out[key].get("scheme") == "fixedpoint":
            out[key] = {**out[key], "scheme": "fixed"}
    return out
