"""Johnston et al. 2018's SSIM-weighted pixel loss: L1 weighted by each block's (1 - SSIM).

Blocks of 8x8 pixels that the reconstruction renders badly (low SSIM, measured with
pytorch-msssim on each block as its own image, 7x7 Gaussian window) get a larger share
of the L1 loss; the weights are normalized to mean 1 per image and carry no gradient, so
the loss stays an L1 in scale and only its spatial emphasis moves.
"""

from __future__ import annotations

import torch
from pytorch_msssim import ssim

BLOCK = 8
WIN = 7  # the largest odd Gaussian window that fits an 8x8 block


def to_blocks(x: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """N x C x H x W (H, W multiples of ``block``) -> (N * H/b * W/b) x C x b x b."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // block, block, w // block, block)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(-1, c, block, block)


def block_ssim(x: torch.Tensor, y: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """SSIM of every ``block`` x ``block`` block, N x H/b x W/b; pixels in [-0.5, 0.5]."""
    n, _, h, w = x.shape
    s = ssim(to_blocks(x + 0.5, block), to_blocks(y + 0.5, block), data_range=1.0,
             size_average=False, win_size=WIN)
    return s.reshape(n, h // block, w // block)


def ssim_weights(x: torch.Tensor, y: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Per-pixel weights N x 1 x H x W: (1 - block SSIM), normalized to mean 1 per image."""
    with torch.no_grad():
        d = (1 - block_ssim(x.float(), y.float(), block)).clamp_min(1e-6)
        d = d / d.mean(dim=(1, 2), keepdim=True)
        return d.repeat_interleave(block, 1).repeat_interleave(block, 2).unsqueeze(1)


def ssim_weighted_l1(x: torch.Tensor, y: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Mean of ``ssim_weights(x, y) * |x - y|``: the codec's training loss per iteration."""
    return (ssim_weights(x, y, block) * (x - y).abs()).mean()
