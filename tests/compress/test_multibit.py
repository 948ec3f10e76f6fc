"""The multi-bit .potlut file: round trip, per-width bit-exact engine, size, checks."""

import numpy as np
import pytest
import torch

import potlut
from potlut.compress import encode, load
from potlut.compress.multibit import (
    _nest,
    _unnest,
    decode_multi,
    multibit_stats,
    read_multi,
)
from potlut.data import load as load_data
from potlut.errors import PotlutFormatError
from potlut.infer import IntEngine, lower, run_reference
from potlut.models import build
from potlut.nn import QuantSpec
from potlut.nn.export import export_graph
from potlut.nn.switchable import export_multibit, quantize_switchable
from potlut.train import TrainConfig, fit
from potlut.train.switchable import fit_switchable


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    bundle = load_data("digits")
    torch.manual_seed(0)
    fp32 = build("small_cnn", 10, 1)
    fit(fp32, bundle, TrainConfig(epochs=2), progress=False)
    sm = quantize_switchable(fp32, QuantSpec(), (2, 3, 4, 8), bundle.calibration_batch())
    fit_switchable(sm, bundle, TrainConfig(epochs=1), progress=False)
    path = tmp_path_factory.mktemp("mb") / "m.potlut"
    sizes = export_multibit(sm.eval(), bundle.in_shape, path, {"model": "small_cnn"})
    return sm, bundle, path, sizes


def test_every_width_round_trips_bit_for_bit(written):
    sm, bundle, path, _ = written
    graphs, info = read_multi(path)
    assert info.widths == [2, 3, 4, 8] and info.base_bits == 8
    for b in sm.widths:
        ref = export_graph(sm.at_bits(b).eval(), bundle.in_shape,
                           {"model": "small_cnn", "bits": b})
        g = graphs[b]
        assert g.architecture() == ref.architecture()
        assert sorted(g.arrays) == sorted(ref.arrays)
        for k, a in ref.arrays.items():
            assert g.arrays[k].dtype == a.dtype and np.array_equal(g.arrays[k], a), (b, k)


def test_every_width_runs_bit_exact_in_the_engine(written):
    sm, bundle, path, _ = written
    x = bundle.test.tensors[0][:128].numpy()
    fake = {}
    for b in sm.widths:
        engine = potlut.engine(path, bits=b)
        got = engine.run(x)
        np.testing.assert_array_equal(got, run_reference(lower(potlut.load(path, b)), x))
        fake[b] = sm.set_bits(b)(torch.from_numpy(x)).argmax(1).numpy()
        # the engine's classes are the fake-quantized model's (near-ties allowed: 1 %)
        assert (got.argmax(1) != fake[b]).sum() <= 1, b
    sm.set_bits(8)
    # the widths are different models: the 2-bit logits are not the 8-bit ones
    assert not np.array_equal(potlut.engine(path, bits=2).run(x), potlut.engine(path).run(x))


def test_one_file_is_smaller_than_the_separate_files(written):
    sm, _, path, sizes = written
    assert sizes["file_bytes"] == path.stat().st_size
    assert sizes["file_bytes"] < sizes["separate_bytes"]
    # measured: 31,8xx B against 59,6xx B; the low widths' codes are nested in the base's
    assert sizes["file_bytes"] < 0.6 * sizes["separate_bytes"]
    assert {b: sorted(v) for b, v in sizes["nested"].items()} == {
        b: ["features.3.weight", "features.6.weight"] for b in (2, 3, 4)}
    st = multibit_stats(path)
    assert st["separate_bytes"] == sizes["separate_bytes"]
    assert [r["bits"] for r in st["per_width"]] == [2, 3, 4, 8]
    for r in st["per_width"][:3]:  # a nested width costs a fraction of its own file
        assert r["stored_bytes"] < 0.3 * r["separate_file_bytes"]
    assert st["base_file_bytes"] == sizes["separate"][8]


def test_damaged_files_and_wrong_widths_are_refused(written, tmp_path):
    _, _, path, _ = written
    data = path.read_bytes()
    with pytest.raises(PotlutFormatError, match="holds bit-widths 2,3,4,8, not 5"):
        decode_multi(data, 5)
    for pos in (20, 200, len(data) - 5):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises(PotlutFormatError, match="checksum"):
            decode_multi(bytes(bad))
    with pytest.raises(PotlutFormatError, match="does not match its header"):
        decode_multi(data[:-1])
    with pytest.raises(PotlutFormatError, match="wrong magic"):
        load(path)  # the single-width reader does not take it for a model
    single = tmp_path / "s.potlut"
    single.write_bytes(encode(read_multi(path, 4)[0][4])[0])
    assert potlut.load(single, 4).meta["bits"] == 4
    with pytest.raises(PotlutFormatError, match="single-width file of 4 bits"):
        potlut.load(single, 3)


def test_nested_codes_round_trip_and_fall_back():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 8, 5000).astype(np.uint8)
    base_neg = (rng.random(5000) < 0.5) & (base > 0)
    narrow = np.minimum(base // 2, 3).astype(np.uint8)  # a function of the base code ...
    amb = base == 3
    narrow[amb] = rng.integers(1, 3, int(amb.sum()))  # ... except in one bucket, 2 choices
    codebook = np.array([0, 0.25, 0.5, 1.0])
    neg = base_neg & (narrow > 0)
    cands, blob = _nest(base, base_neg, narrow, neg, codebook)
    assert cands[3] == [1, 2] and all(len(c) == 1 for i, c in enumerate(cands) if i != 3)
    assert len(blob) == (int(amb.sum()) + 7) // 8  # one bit per weight of that bucket
    codes, got_neg = _unnest(cands, blob, base, base_neg, codebook, np.dtype(np.uint8))
    assert np.array_equal(codes, narrow) and np.array_equal(got_neg, neg)
    three = narrow.copy()
    three[amb] = rng.integers(0, 3, int(amb.sum()))
    c3, b3 = _nest(base, base_neg, three, base_neg & (three > 0), codebook)
    assert len(b3) == (2 * int(amb.sum()) + 7) // 8  # three choices: two bits each
    assert np.array_equal(_unnest(c3, b3, base, base_neg, codebook, np.dtype(np.uint8))[0],
                          three)
    flipped = neg.copy()
    flipped[np.flatnonzero(neg)[0]] = False  # a sign the base does not predict
    assert _nest(base, base_neg, narrow, flipped, codebook) is None
    with pytest.raises(PotlutFormatError, match="selections"):
        _unnest(cands, blob + b"\0", base, base_neg, codebook, np.dtype(np.uint8))


def test_engine_api_takes_a_graph_or_a_width(written):
    _, bundle, path, _ = written
    x = bundle.test.tensors[0][:8].numpy()
    g = potlut.load(path, 3)
    np.testing.assert_array_equal(IntEngine(g).run(x), potlut.engine(path, bits=3).run(x))
