"""The adaptive context binary rANS: exact round trips, rate at its model's entropy, and
malformed chunks rejected."""

from __future__ import annotations

import numpy as np
import pytest

from potlut.codec.entropy import decode_codes, decode_counts, encode_codes, encode_counts
from potlut.errors import PotlutFormatError


def _codes(t, c, h, w, seed=0, top=None):
    """Biased, spatially correlated codes (each channel its own bias), inactive tiles 0."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, (top or t) + 1, (h, w))
    bias = rng.random(c)
    flip = rng.random((t, c, h, w)) < bias[None, :, None, None]
    codes = np.where(flip, 1, -1).astype(np.int8)
    codes[:, :, :, 1::2] = codes[:, :, :, ::2][..., : w // 2]  # copies: contexts pay off
    for k in range(t):
        codes[k][:, counts <= k] = 0
    return codes, counts


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 8, 5, 7), (6, 32, 22, 32)])
def test_round_trip_exact(shape):
    codes, counts = _codes(*shape)
    chunks, _ = encode_codes(codes, counts)
    assert np.array_equal(decode_codes(chunks, counts, shape[1]), codes)
    chunk, _ = encode_counts(counts, shape[0])
    assert np.array_equal(decode_counts(chunk, counts.shape, shape[0]), counts)


def test_prefix_of_chunks_decodes_the_first_iterations():
    codes, counts = _codes(5, 16, 9, 12, seed=3)
    chunks, _ = encode_codes(codes, counts)
    assert np.array_equal(decode_codes(chunks[:2], counts, 16), codes[:2])


def test_rate_within_one_percent_of_model_entropy():
    codes, counts = _codes(8, 32, 40, 40, seed=1)
    chunks, entropy = encode_codes(codes, counts)
    coded = 8 * sum(len(c) for c in chunks)
    assert abs(coded / sum(entropy) - 1) < 0.01
    # and the contexts earn their keep: far below one bit per code
    assert sum(entropy) < 0.8 * int((codes != 0).sum())
    chunk, ent = encode_counts(counts, 8)
    assert 8 * len(chunk) <= ent + 40  # one chunk: the 4-byte final state and < 1 byte


@pytest.mark.parametrize("damage", ["cut", "extra", "flip", "empty"])
def test_malformed_chunk_is_a_format_error(damage):
    codes, counts = _codes(2, 8, 6, 6, seed=2)
    chunks, _ = encode_codes(codes, counts)
    c = bytearray(chunks[1])
    bad = {"cut": bytes(c[:-1]), "extra": bytes(c) + b"\0",
           "flip": bytes(c[:4]) + bytes([c[4] ^ 0x55]) + bytes(c[5:]), "empty": b""}[damage]
    with pytest.raises(PotlutFormatError, match="iteration 2"):
        decode_codes([chunks[0], bad], counts, 8)
