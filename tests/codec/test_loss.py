"""The SSIM-weighted L1 against pytorch-msssim's SSIM computed block by block."""

from __future__ import annotations

import torch
from pytorch_msssim import ssim

from potlut.codec.loss import BLOCK, WIN, block_ssim, ssim_weighted_l1, ssim_weights


def _pair():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 24, generator=g) - 0.5
    noise = torch.randn(2, 3, 16, 24, generator=g) * torch.linspace(0.01, 0.3, 24)
    return x, (x + noise).clamp(-0.5, 0.5)


def test_block_ssim_is_the_library_ssim_of_each_block():
    x, y = _pair()
    got = block_ssim(x, y)
    assert got.shape == (2, 2, 3)
    for n in range(2):
        for i in range(2):
            for j in range(3):
                sl = (slice(n, n + 1), slice(None), slice(i * BLOCK, (i + 1) * BLOCK),
                      slice(j * BLOCK, (j + 1) * BLOCK))
                want = ssim(x[sl] + 0.5, y[sl] + 0.5, data_range=1.0, win_size=WIN)
                assert abs(float(got[n, i, j]) - float(want)) < 1e-6


def test_weighted_l1_is_l1_weighted_by_one_minus_ssim():
    x, y = _pair()
    s = block_ssim(x, y)
    w = (1 - s) / (1 - s).mean(dim=(1, 2), keepdim=True)
    assert torch.allclose(ssim_weights(x, y).mean(dim=(1, 2, 3)), torch.ones(2), atol=1e-6)
    want = 0.0
    for n in range(2):
        for i in range(2):
            for j in range(3):
                d = (x - y)[n, :, i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK]
                want += float(w[n, i, j]) * float(d.abs().sum())
    assert abs(float(ssim_weighted_l1(x, y)) - want / x.numel()) < 1e-6
    # the noisier right-hand blocks weigh more than the left-hand ones
    assert (w[:, :, 2] > w[:, :, 0]).all()


def test_weights_carry_no_gradient():
    x, y = _pair()
    y = y.clone().requires_grad_()
    ssim_weighted_l1(x, y).backward()
    w = ssim_weights(x, y.detach())
    assert torch.allclose(y.grad, w * torch.sign(y.detach() - x) / x.numel(), atol=1e-9)
