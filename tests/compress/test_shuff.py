"""S-Huff and raw packing: exact round trips, canonical codes, length limits, bad streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potlut.compress import shuff
from potlut.compress.container import CODERS
from potlut.compress.sharing import SharedWeights, pack_raw, unpack_raw
from potlut.errors import PotlutFormatError


def _pot_codebook(n: int) -> np.ndarray:
    return np.array([0.0] + [2.0 ** -(n - 1 - c) for c in range(1, n)], dtype=np.float32)


@st.composite
def weights(draw) -> SharedWeights:
    """Random layers, including empty, one element, all zero, one symbol, all symbols."""
    n_codes = draw(st.sampled_from([1, 2, 4, 8, 16, 128, 300]))
    size = draw(st.sampled_from([0, 1, 2, 7, 64, 1000]))
    kind = draw(st.sampled_from(["random", "zero", "one", "all", "skewed"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "zero":
        codes = np.zeros(size, np.int64)
    elif kind == "one":
        codes = np.full(size, draw(st.integers(0, n_codes - 1)))
    elif kind == "all":
        codes = np.arange(size) % n_codes
    elif kind == "skewed":
        p = 0.5 ** np.arange(1, n_codes + 1)
        codes = rng.choice(n_codes, size=size, p=p / p.sum())
    else:
        codes = rng.integers(0, n_codes, size)
    cb = _pot_codebook(n_codes)
    codes = codes.astype(np.uint8 if n_codes <= 256 else np.uint16)
    negative = (rng.random(size) < 0.5) & (cb[codes.astype(np.int64)] != 0)
    return SharedWeights(codes, negative, cb)


@settings(max_examples=150, deadline=None)
@given(weights())
def test_shuff_round_trip_is_exact(sw: SharedWeights) -> None:
    blob = shuff.encode_weights(sw)
    back = shuff.decode_weights(blob, sw.codes.shape, sw.codebook)
    assert back.codes.dtype == sw.codes.dtype
    np.testing.assert_array_equal(back.codes, sw.codes)
    np.testing.assert_array_equal(back.negative, sw.negative)
    # size: lengths table (w bits for each code up to the last used one) + exactly sum(len)
    # bits, or the truncated binary code where shorter, + one bit per non-zero weight
    counts = np.bincount(sw.codes.astype(np.int64), minlength=sw.n_codes)
    lengths = shuff.code_lengths(counts)
    nbits = int((counts * lengths).sum())
    nnz = int(sw.nonzero().sum())
    m = int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 0
    table = 5 + (m * int(lengths.max(initial=0)).bit_length() + 7) // 8
    coded = table + (nbits + 7) // 8
    if m >= 2:  # or the 5-byte truncated binary table where that is fewer bytes
        coded = min(coded, 5 + (int(counts @ shuff.truncated_binary(m, sw.n_codes)) + 7) // 8)
    assert len(blob) == coded + (nnz + 7) // 8


@settings(max_examples=60, deadline=None)
@given(weights())
def test_packed_round_trip_is_exact(sw: SharedWeights) -> None:
    coder = CODERS["packed"]
    back = coder.decode(coder.encode(sw), sw.codes.shape, sw.codebook)
    np.testing.assert_array_equal(back.codes, sw.codes)
    np.testing.assert_array_equal(back.negative, sw.negative)


def test_raw_packing_is_b_bits_per_weight() -> None:
    codes = np.array([0, 7, 3, 1, 5], np.uint8)
    neg = np.array([0, 1, 0, 1, 0], bool)
    data = pack_raw(codes, neg, 8)  # 4 bits per weight: sign then 3 magnitude bits
    assert data == bytes([0b0000_1111, 0b0011_1001, 0b0101_0000])
    back_codes, back_neg = unpack_raw(data, 5, 8)
    np.testing.assert_array_equal(back_codes, codes)
    np.testing.assert_array_equal(back_neg, neg)


def test_huffman_lengths_and_canonical_codes_match_the_textbook() -> None:
    counts = np.array([5, 9, 12, 13, 16, 45])  # CLRS example
    lengths = shuff.code_lengths(counts)
    assert lengths.tolist() == [4, 4, 3, 3, 3, 1]
    codes = shuff.canonical_codes(lengths)
    assert codes.tolist() == [0b1110, 0b1111, 0b100, 0b101, 0b110, 0b0]
    assert shuff.code_lengths(np.array([0, 0, 7])).tolist() == [0, 0, 1]
    assert shuff.code_lengths(np.array([0, 0])).tolist() == [0, 0]


def test_length_limit_keeps_a_prefix_code() -> None:
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib)
    assert shuff.code_lengths(counts, max_len=64).max() == 29  # unlimited: a 29-deep tree
    lengths = shuff.code_lengths(counts, max_len=12)
    assert lengths.max() == 12
    assert (2.0 ** -lengths.astype(float)).sum() == 1.0  # Kraft equality: still complete
    assert (np.diff(lengths[::-1].astype(int)) >= 0).all()  # rarer symbols never shorter
    symbols = np.repeat(np.arange(30), 3)
    stream, nbits = shuff.encode_symbols(symbols, lengths)
    np.testing.assert_array_equal(shuff.decode_symbols(stream, nbits, lengths, 90), symbols)


def _blob() -> tuple[bytes, SharedWeights]:
    rng = np.random.default_rng(1)
    codes = rng.choice(8, 500, p=[0.3, 0.02, 0.03, 0.05, 0.1, 0.2, 0.2, 0.1]).astype(np.uint8)
    cb = _pot_codebook(8)
    sw = SharedWeights(codes, (rng.random(500) < 0.5) & (codes > 0), cb)
    return shuff.encode_weights(sw), sw


def test_decoder_rejects_inconsistent_streams() -> None:
    blob, sw = _blob()
    cases = {
        "fewer weights": lambda b: shuff.decode_weights(b, (499,), sw.codebook),
        # (501 can be valid: zero padding bits may hold one more all-zero codeword)
        "more weights": lambda b: shuff.decode_weights(b, (520,), sw.codebook),
        "cut": lambda b: shuff.decode_weights(b[:-1], (500,), sw.codebook),
        "extra byte": lambda b: shuff.decode_weights(b + b"\0", (500,), sw.codebook),
        "no header": lambda b: shuff.decode_weights(b[:5], (500,), sw.codebook),
    }
    for name, fn in cases.items():
        with pytest.raises(PotlutFormatError):
            fn(blob)
            pytest.fail(name)
    lengths, head = shuff.decode_table(blob, 8)
    assert head == 5 + (8 * int(lengths.max()).bit_length() + 7) // 8  # w = 3: 8 bytes
    bad = lengths.copy()
    bad[0] = bad[6] = 1  # two codes of length 1 and more: Kraft sum exceeds 1
    with pytest.raises(PotlutFormatError, match="Kraft"):
        shuff.decode_weights(shuff.encode_table(bad) + blob[head:], (500,), sw.codebook)
    for table, msg in [(b"\x06\x08\x00\x00\x00", "does not fit"),  # w = 6 > 5
                       (b"\x03\x09\x00\x00\x00", "does not fit"),  # 9 codes of 8
                       (shuff.encode_table(np.r_[lengths[:7], 0]), "unused last code")]:
        if msg == "unused last code":
            table = table[:1] + b"\x08" + table[2:]  # lists code 7, whose length is 0
        with pytest.raises(PotlutFormatError, match=msg):
            shuff.decode_weights(table + blob[head:], (500,), sw.codebook)


def test_code_length_table_round_trips_and_drops_unused_top_codes() -> None:
    lengths = np.zeros(128, np.int64)
    lengths[[0, 3, 70]] = [1, 2, 2]
    table = shuff.encode_table(lengths)
    assert len(table) == 5 + (71 * 2 + 7) // 8  # 71 codes listed at 2 bits each: 23 bytes
    back, size = shuff.decode_table(table + b"tail", 128)
    assert size == len(table)
    np.testing.assert_array_equal(back, lengths)


def test_vectorized_decoder_handles_a_large_layer() -> None:
    rng = np.random.default_rng(2)
    n = 270_000  # ResNet20-sized
    codes = rng.choice(8, n, p=[0.3, 0.02, 0.03, 0.05, 0.1, 0.2, 0.2, 0.1]).astype(np.uint8)
    sw = SharedWeights(codes, (rng.random(n) < 0.5) & (codes > 0), _pot_codebook(8))
    back = shuff.decode_weights(shuff.encode_weights(sw), (n,), sw.codebook)
    np.testing.assert_array_equal(back.codes, codes)
    np.testing.assert_array_equal(back.negative, sw.negative)


def test_truncated_binary_code_is_complete() -> None:
    lengths = shuff.truncated_binary(91, 128)  # L = 7: 128 - 91 = 37 codes of 6 bits
    assert lengths[:37].tolist() == [6] * 37 and lengths[37:91].tolist() == [7] * 54
    assert not lengths[91:].any()
    assert shuff.truncated_binary(128, 128).tolist() == [7] * 128
    assert shuff.truncated_binary(2, 8).tolist() == [1, 1] + [0] * 6
    for m in range(2, 300):  # Kraft sum exactly 1
        ln = shuff.truncated_binary(m, 300)
        assert sum(2.0 ** -int(x) for x in ln if x) == 1.0, m


def _huffman_bytes(sw: SharedWeights) -> int:
    codes = sw.codes.reshape(-1)
    lengths = shuff.code_lengths(np.bincount(codes, minlength=sw.n_codes))
    table = shuff.encode_table(lengths)
    return len(table) + len(shuff.encode_symbols(codes, lengths)[0])


def test_small_layer_over_many_codes_takes_the_5_byte_table() -> None:
    """640 weights spread over 120 of 128 codes (like the digits model's 8-bit fc): the
    Huffman table (4 bits a code) outweighs what it saves over 7 bits a weight."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 120, 640).astype(np.uint8)
    sw = SharedWeights(codes, (rng.random(640) < 0.5) & (codes > 0), _pot_codebook(128))
    blob = shuff.encode_weights(sw)
    assert blob[0] == shuff.TRUNCATED and shuff.side_bytes(blob, 128) == 5
    lengths, _ = shuff.decode_table(blob, 128)
    assert lengths[:8].tolist() == [6] * 8 and lengths[8:120].tolist() == [7] * 112
    stream = -(-int(np.bincount(codes, minlength=128) @ lengths) // 8)
    signs = -(-int((codes > 0).sum()) // 8)
    assert len(blob) == 5 + stream + signs
    assert 5 + stream < _huffman_bytes(sw)
    back = shuff.decode_weights(blob, (640,), sw.codebook)
    np.testing.assert_array_equal(back.codes, codes)
    np.testing.assert_array_equal(back.negative, sw.negative)
    # a large skewed 8-code layer keeps its Huffman table (w = 3 bits a length)
    big = rng.choice(8, 5000, p=[0.4, 0.3, 0.1, 0.1, 0.04, 0.03, 0.02, 0.01]).astype(np.uint8)
    blob = shuff.encode_weights(SharedWeights(big, np.zeros(5000, bool), _pot_codebook(8)))
    assert blob[0] == 3 and shuff.side_bytes(blob, 8) == 8


@pytest.mark.parametrize(("m", "n_codes"), [(0, 8), (1, 8), (9, 8), (1 << 31, 8)])
def test_truncated_table_outside_2_to_n_codes_is_refused(m, n_codes) -> None:
    import struct
    blob = struct.pack("<BI", shuff.TRUNCATED, m) + b"\0" * 16
    with pytest.raises(PotlutFormatError, match="truncated binary code"):
        shuff.decode_weights(blob, (8,), _pot_codebook(n_codes))
