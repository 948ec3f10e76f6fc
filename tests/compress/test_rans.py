"""rANS coder: exact round trips, near-bound sizes, and rejection of damaged streams."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potlut.compress import rans, shuff
from potlut.compress.bounds import layer_bound_bytes
from potlut.compress.container import CODERS, decode, encode
from potlut.compress.sharing import SharedWeights
from potlut.errors import PotlutFormatError
from tests.compress.test_container import assert_same_graph, tiny_graph
from tests.compress.test_shuff import weights


def _layer(n: int = 20000, seed: int = 0) -> SharedWeights:
    """A 4-bit IOS-PoT-like layer: codes peaked near zero, half the signs negative."""
    rng = np.random.default_rng(seed)
    p = np.exp(-0.45 * np.abs(np.arange(16) - 2.5))
    codes = rng.choice(16, size=n, p=p / p.sum()).astype(np.uint8)
    cb = np.array([0.0] + [2.0 ** -(15 - c) for c in range(1, 16)], dtype=np.float32)
    neg = (rng.random(n) < 0.5) & (codes != 0)
    return SharedWeights(codes, neg, cb)


@settings(max_examples=150, deadline=None)
@given(weights())
def test_rans_round_trip_is_exact(sw: SharedWeights) -> None:
    blob = rans.encode_weights(sw)
    back = rans.decode_weights(blob, sw.codes.shape, sw.codebook)
    assert back.codes.dtype == sw.codes.dtype
    np.testing.assert_array_equal(back.codes, sw.codes)
    np.testing.assert_array_equal(back.negative, sw.negative)
    nnz = int(sw.nonzero().sum())
    (nstream,) = struct.unpack_from("<I", blob, 1 + 2 * sw.n_codes)
    assert len(blob) == rans.side_bytes(sw.n_codes) + nstream + (nnz + 7) // 8
    assert (nstream == 0) == (sw.codes.size == 0)


@pytest.mark.parametrize("n_used,scale", [(0, 12), (1, 12), (16, 12), (2048, 12),
                                          (2049, 13), (65536, 16)])
def test_scale_bits_fit_every_used_code(n_used: int, scale: int) -> None:
    assert rans.scale_bits_for(n_used) == scale


def test_frequencies_sum_to_scale_and_keep_rare_codes() -> None:
    counts = np.array([10**6, 1, 0, 5, 70000, 1])
    f = rans.quantize_freqs(counts, 12)
    assert int(f.sum()) == 4096
    assert f[2] == 0 and (f[counts > 0] >= 1).all()
    many = np.ones(5000, np.int64)
    many[0] = 10**6
    assert rans.scale_bits_for(5000) == 14
    g = rans.quantize_freqs(many, 14)
    assert int(g.sum()) == 1 << 14 and (g >= 1).all()


def test_rans_is_within_half_a_percent_of_the_bound_and_beats_shuff() -> None:
    sw = _layer()
    bound = layer_bound_bytes(sw.codes, sw.nonzero())
    coded = len(rans.encode_weights(sw)) - rans.side_bytes(sw.n_codes)
    blob = shuff.encode_weights(sw)
    huff = len(blob) - shuff.side_bytes(blob, sw.n_codes)
    assert bound <= coded <= 1.005 * bound + 16
    assert coded < huff


def test_single_code_layer_costs_only_the_final_state() -> None:
    cb = np.array([0.0, 0.5], np.float32)
    sw = SharedWeights(np.zeros(100000, np.uint8), np.zeros(100000, bool), cb)
    blob = rans.encode_weights(sw)
    assert len(blob) == rans.side_bytes(2) + 4


def test_rans_is_a_registered_coder() -> None:
    assert CODERS["rans"].encode is rans.encode_weights
    assert CODERS["rans"].side_bytes(b"", 16) == 37


def test_truncated_and_extended_blobs_are_rejected() -> None:
    sw = _layer(3000, seed=1)
    blob = rans.encode_weights(sw)
    for cut in range(0, len(blob), 97):
        with pytest.raises(PotlutFormatError):
            rans.decode_weights(blob[:cut], sw.codes.shape, sw.codebook)
    with pytest.raises(PotlutFormatError):
        rans.decode_weights(blob + b"\0", sw.codes.shape, sw.codebook)
    with pytest.raises(PotlutFormatError):  # one weight more than encoded
        rans.decode_weights(blob, (sw.codes.size + 1,), sw.codebook)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.integers(1, 255))
def test_corrupt_streams_raise_format_errors_only(pos: int, xor: int) -> None:
    sw = _layer(2000, seed=2)
    blob = bytearray(rans.encode_weights(sw))
    nsign = (int(sw.nonzero().sum()) + 7) // 8
    i = pos % (len(blob) - nsign)  # header, frequency table or rANS stream
    blob[i] ^= xor
    with pytest.raises(PotlutFormatError):
        rans.decode_weights(bytes(blob), sw.codes.shape, sw.codebook)


@pytest.mark.parametrize("field", ["scale", "freq_sum", "huge_shape", "state"])
def test_bad_header_fields_are_rejected(field: str) -> None:
    sw = _layer(500, seed=3)
    blob = bytearray(rans.encode_weights(sw))
    shape = sw.codes.shape
    if field == "scale":
        blob[0] = 17
    elif field == "freq_sum":
        blob[1] ^= 1
    elif field == "huge_shape":
        shape = (1 << 40,)
    else:  # initial state below L
        blob[rans.side_bytes(16) + 3] = 0
    with pytest.raises(PotlutFormatError):
        rans.decode_weights(bytes(blob), shape, sw.codebook)


def test_file_written_with_rans_reads_back_exactly() -> None:
    g = tiny_graph()
    data, info = encode(g, coder="rans")
    back, binfo = decode(data)
    assert info.coder == "rans" and binfo.coder == "rans"
    assert_same_graph(g, back)
