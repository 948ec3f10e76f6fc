"""The binarizer (values, expectation, sign at inference) and the masked forward pass."""

from __future__ import annotations

import pytest
import torch

from potlut.codec.model import TILE, Binarizer, CodecConfig, RecurrentCodec


def test_binarizer_training_values_and_expectation():
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 21).repeat(20000, 1).requires_grad_()
    b = Binarizer().train()(x)
    assert set(b.unique().tolist()) == {-1.0, 1.0}
    n = x.shape[0]
    mean, v = b.mean(0).detach(), x[0].detach()
    # E[b] = x: each column's mean within 4 standard errors sqrt((1 - x^2) / n)
    assert ((mean - v).abs() <= 4 * ((1 - v ** 2) / n).sqrt() + 1e-6).all()
    assert mean[0] == -1 and mean[-1] == 1  # x = -1, 1 are deterministic
    b.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight-through


def test_binarizer_inference_is_sign():
    x = torch.tensor([-0.9, -1e-6, 0.0, 1e-6, 0.3])
    assert Binarizer().eval()(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("additive", [False, True])
def test_stopped_tiles_send_zeros_and_keep_their_pixels(additive):
    torch.manual_seed(1)
    model = RecurrentCodec(CodecConfig(bits=4, iterations=3, width=8, additive=additive)).eval()
    x = torch.rand(1, 3, 32, 48) - 0.5
    stop = torch.tensor([[[[1, 2, 3], [3, 1, 2]]]])
    with torch.no_grad():
        outs, codes = model(x, 3, stop)
    for t in range(3):
        active = (stop > t)[0, 0]
        assert (codes[t][0].abs().sum(0) > 0).eq(active).all()  # +-1 where active, else 0
    tile = outs[2][0, :, :TILE, :TILE]  # count 1: frozen after the first iteration
    assert torch.equal(tile, outs[0][0, :, :TILE, :TILE])
    assert not torch.equal(outs[2][0, :, :TILE, 2 * TILE:], outs[1][0, :, :TILE, 2 * TILE:])


def test_additive_outputs_correct_the_last_image():
    """Same weights: the first image is the one-shot model's; each later one is the last
    image plus the decoder's output on the same codes (the encoder sees the residual)."""
    torch.manual_seed(2)
    one = RecurrentCodec(CodecConfig(bits=4, iterations=3, width=8)).eval()
    add = RecurrentCodec(CodecConfig(bits=4, iterations=3, width=8, additive=True)).eval()
    add.load_state_dict(one.state_dict())
    x = torch.rand(1, 3, 32, 32) - 0.5
    with torch.no_grad():
        outs, codes = add(x, 3)
        first, _ = one(x, 1)
        assert torch.equal(outs[0], first[0])
        dec = add.init_state()[1]
        recon = torch.zeros_like(x)
        for t in range(3):
            out, dec = add.decode_step(codes[t], dec, t == 0)
            recon = recon + out
            assert torch.equal(outs[t], recon)
    assert not torch.equal(outs[1], one(x, 2)[0][1])
