"""The recurrent codec network: ConvGRU encoder, binarizer, ConvGRU decoder (Toderici 2017).

One iteration turns the residual of the current reconstruction into ``bits`` binary
codes per 16x16 tile; the decoder keeps its hidden state across iterations and outputs a
whole new reconstruction each time ("one-shot" reconstruction, Toderici 2017's best), or,
with ``additive``, a correction added to the previous one (Toderici 2016's additive form:
a small decoder need not carry the whole image in its state, so later iterations keep
adding detail), so iteration ``k``'s image needs only the first ``k`` code planes.
Johnston et al. 2018's priming and diffusion are extra decoder steps on the same codes:
``prime_steps`` before the first output, ``diffuse_steps`` before every later one,
letting hidden state spread spatially.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

TILE = 16  # pixels per code vector side: four stride-2 stages


@dataclass(frozen=True)
class CodecConfig:
    """Sizes of the network; stored in checkpoints and in every .rnnc stream header."""

    bits: int = 32  # binary codes per 16x16 tile per iteration (32 -> 0.125 bpp raw)
    iterations: int = 12  # iterations trained (and the most a stream may hold)
    width: int = 64  # channel unit of the GRU layers
    prime_steps: int = 2  # extra decoder steps before the first output (priming)
    diffuse_steps: int = 1  # extra decoder steps before every later output (diffusion)
    additive: bool = False  # each output corrects the last reconstruction (else replaces it)

    def to_dict(self) -> dict:
        return asdict(self)


class ConvGRU(nn.Module):
    """Convolutional GRU cell: the input convolution may stride, the hidden one keeps size."""

    def __init__(self, cin: int, hidden: int, stride: int = 1, hidden_kernel: int = 1):
        super().__init__()
        self.hidden = hidden
        self.x2h = nn.Conv2d(cin, 3 * hidden, 3, stride, 1)
        self.h2h = nn.Conv2d(hidden, 3 * hidden, hidden_kernel, 1, hidden_kernel // 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        gx = self.x2h(x)
        if h is None:
            h = gx.new_zeros(gx.shape[0], self.hidden, gx.shape[2], gx.shape[3])
        gh = self.h2h(h)
        rx, zx, nx = gx.chunk(3, 1)
        rh, zh, nh = gh.chunk(3, 1)
        r, z = torch.sigmoid(rx + rh), torch.sigmoid(zx + zh)
        n = torch.tanh(nx + r * nh)
        return (1 - z) * n + z * h


class Binarizer(nn.Module):
    """Codes in {-1, 1}: stochastic in training (E[b] = x for x in [-1, 1], STE gradient),
    sign at inference (0 maps to +1), as in Toderici et al. 2016."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            prob = (1 + x.detach()) / 2
            b = torch.where(torch.rand_like(x) < prob, 1.0, -1.0).to(x.dtype)
        else:
            b = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
        return b + (x - x.detach())  # exactly b forward, identity gradient


class Encoder(nn.Module):
    """Residual image (3 x H x W) -> pre-binarization codes in (-1, 1) at H/16 x W/16."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        w = cfg.width
        self.conv = nn.Conv2d(3, w // 2, 3, 2, 1)
        self.rnn = nn.ModuleList([ConvGRU(w // 2, w, 2), ConvGRU(w, w * 3 // 2, 2),
                                  ConvGRU(w * 3 // 2, w * 3 // 2, 2)])
        self.out = nn.Conv2d(w * 3 // 2, cfg.bits, 1)

    def forward(self, r: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        x = self.conv(r)
        new = []
        for cell, h in zip(self.rnn, state, strict=True):
            x = cell(x, h)
            new.append(x)
        return torch.tanh(self.out(x)), new


class Decoder(nn.Module):
    """Codes at H/16 -> a full reconstruction; depth-to-space between GRU stages."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        w = cfg.width
        self.inp = nn.Conv2d(cfg.bits, w * 3 // 2, 1)
        hid = [w * 3 // 2, w * 3 // 2, w, w // 2]
        cin = [w * 3 // 2, w * 3 // 8, w * 3 // 8, w // 4]
        kern = [3, 3, 1, 1]  # 3x3 hidden kernels where diffusion spreads state
        self.rnn = nn.ModuleList([ConvGRU(c, h, 1, k) for c, h, k in zip(cin, hid, kern,
                                                                         strict=True)])
        self.out = nn.Conv2d(w // 8, 3, 3, 1, 1)

    def forward(self, bits: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        x = self.inp(bits)
        new = []
        for cell, h in zip(self.rnn, state, strict=True):
            x = cell(x, h)
            new.append(x)
            x = F.pixel_shuffle(x, 2)
        return self.out(x), new


class RecurrentCodec(nn.Module):
    """Encoder + binarizer + decoder; pixels in [-0.5, 0.5], sides multiples of 16."""

    def __init__(self, cfg: CodecConfig | None = None):
        super().__init__()
        self.cfg = cfg or CodecConfig()
        self.encoder, self.binarizer, self.decoder = Encoder(self.cfg), Binarizer(), \
            Decoder(self.cfg)

    def init_state(self) -> tuple[list, list]:
        return [None] * len(self.encoder.rnn), [None] * len(self.decoder.rnn)

    def decode_step(self, bits: torch.Tensor, state: list, first: bool) -> tuple:
        """One iteration of the decoder: 1 + prime (first) or 1 + diffuse steps on ``bits``."""
        extra = self.cfg.prime_steps if first else self.cfg.diffuse_steps
        for _ in range(extra + 1):
            out, state = self.decoder(bits, state)
        return out, state

    def reconstruct(self, out: torch.Tensor, recon: torch.Tensor,
                    active: torch.Tensor | None = None) -> torch.Tensor:
        """The image after one decoder output: ``out`` itself, or ``recon + out`` (additive);
        tiles where ``active`` (N x 1 x H/16 x W/16, bool) is false keep ``recon``'s pixels."""
        new = recon + out if self.cfg.additive else out
        if active is None:
            return new
        keep = F.interpolate(active.to(recon.dtype), scale_factor=TILE)
        return keep * new + (1 - keep) * recon

    def forward(self, x: torch.Tensor, iterations: int, stop: torch.Tensor | None = None):
        """Reconstructions and code planes of iterations 1..``iterations``.

        ``stop`` (N x 1 x H/16 x W/16, ints >= 1) ends a tile after that many iterations:
        its later codes are sent as 0 (no information) and its pixels keep the image of its
        last iteration, which is what a stream with per-tile iteration counts decodes to.
        """
        enc, dec = self.init_state()
        recon = torch.zeros_like(x)
        outs, codes = [], []
        for t in range(iterations):
            c, enc = self.encoder(x - recon, enc)
            b = self.binarizer(c)
            if stop is not None:
                b = b * (stop > t).to(b.dtype)
            out, dec = self.decode_step(b, dec, t == 0)
            out = self.reconstruct(out, recon, None if stop is None else stop > t)
            recon = out
            outs.append(out)
            codes.append(b)
        return outs, codes
