"""Encode -> file -> decode with a tiny trained codec: real sizes, progressive prefixes,
spatially adaptive stopping, bit-rate targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from potlut.codec.encode import decode, encode, encode_to_bpp, progressive_bpp, to_image, to_tensor
from potlut.codec.loss import block_ssim
from potlut.codec.model import TILE, CodecConfig, RecurrentCodec
from potlut.codec.stream import truncate
from potlut.errors import PotlutConfigError, PotlutFormatError


def _tile_ssim(img: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return block_ssim(to_tensor(img), to_tensor(dec), TILE)[0].numpy()


def test_round_trip_through_a_file(tiny, photo, tmp_path):
    model, _ = tiny
    enc = encode(model, photo)
    path = tmp_path / "x.rnnc"
    path.write_bytes(enc.data)
    assert path.stat().st_size * 8 / (64 * 96) == enc.bpp
    dec = decode(model, path.read_bytes())
    assert np.array_equal(dec, enc.images[-1])
    # it codes something: the last iteration beats the first, both beat mid-grey
    err = [float(np.abs(photo.astype(int) - im).mean()) for im in enc.images]
    assert err[-1] < err[0] < float(np.abs(photo.astype(int) - 128).mean())


def test_truncated_stream_is_the_k_iteration_image(tiny, photo):
    model, _ = tiny
    enc = encode(model, photo)
    sizes = progressive_bpp(enc)
    assert sizes == sorted(sizes) and sizes[-1] == enc.bpp
    for k in range(1, 4):
        short = truncate(enc.data, k)
        assert 8 * len(short) / (64 * 96) == sizes[k - 1]
        assert np.array_equal(decode(model, short), enc.images[k - 1])
        assert np.array_equal(decode(model, enc.data, iterations=k), enc.images[k - 1])
        assert np.array_equal(encode(model, photo, iterations=k).images[-1], enc.images[k - 1])


def test_adaptive_tiles_stop_when_their_target_is_met(tiny, photo):
    model, _ = tiny
    trace = encode(model, photo).trace  # per-tile SSIM after each iteration, no stops
    target = float(np.median(trace[1]))
    enc = encode(model, photo, quality=target)
    counts, n = enc.counts, model.cfg.iterations
    assert 1 <= counts.min() and counts.max() == n and (counts < n).sum() >= 6
    final = _tile_ssim(photo, decode(model, enc.data))
    stopped = counts < n
    assert (final[stopped] >= target).all()  # each stopped tile meets the target ...
    for (y, x) in zip(*np.nonzero(counts > 1), strict=True):  # ... and not an iteration earlier
        assert enc.trace[counts[y, x] - 2, y, x] < target
    assert enc.bpp < encode(model, photo).bpp


def test_bpp_target_is_met_from_below(tiny, photo):
    model, _ = tiny
    sizes = progressive_bpp(encode(model, photo))
    goal = (sizes[1] + sizes[2]) / 2
    fixed = encode_to_bpp(model, photo, goal, adaptive=False)
    assert fixed.data == encode(model, photo, iterations=2).data
    adaptive = encode_to_bpp(model, photo, goal)
    assert fixed.bpp <= adaptive.bpp <= goal
    with pytest.raises(PotlutConfigError, match="below this model's one-iteration rate"):
        encode_to_bpp(model, photo, sizes[0] * 0.9)


def test_stream_of_another_model_is_refused(tiny, photo):
    model, _ = tiny
    data = encode(model, photo, iterations=2).data
    torch.manual_seed(5)
    other = RecurrentCodec(CodecConfig(bits=8, iterations=4, width=16, prime_steps=1,
                                       diffuse_steps=1))
    with pytest.raises(PotlutFormatError, match="made by a different model"):
        decode(other, data)


def test_additive_model_round_trips_and_names_itself(photo):
    """An additive codec's stream decodes to the encoder's images at every prefix, and its
    fingerprint differs from a one-shot model with the same weights (which must refuse it)."""
    torch.manual_seed(3)
    cfg = dict(bits=8, iterations=3, width=16, prime_steps=1, diffuse_steps=1)
    add = RecurrentCodec(CodecConfig(**cfg, additive=True)).eval()
    one = RecurrentCodec(CodecConfig(**cfg)).eval()
    one.load_state_dict(add.state_dict())
    enc = encode(add, photo)
    with torch.no_grad():  # the encoder's images are the network's additive ones
        outs, _ = add(to_tensor(photo), 3)
    assert np.array_equal(to_image(outs[-1], *photo.shape[:2]), enc.images[-1])
    for k in (1, 2, 3):
        assert np.array_equal(decode(add, truncate(enc.data, k)), enc.images[k - 1])
    with pytest.raises(PotlutFormatError, match="different model"):
        decode(one, enc.data)
