"""Encoding and decoding images with a trained codec: progressive and spatially adaptive.

The encoder runs the decoder in its loop, so both see the same codes. With a quality
target (Johnston et al. 2018's spatially adaptive bit rates) a tile stops after the first
iteration at which its SSIM reaches the target: its later codes are not sent and its
pixels keep that iteration's image, so every stopped tile meets the target exactly as
decoded. The per-tile counts travel in the stream. A bit-rate target is met by bisection
on the quality target (the largest rate not above it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from potlut.codec import entropy
from potlut.codec.loss import block_ssim
from potlut.codec.model import TILE, RecurrentCodec
from potlut.codec.stream import StreamHeader, read_stream, write_stream
from potlut.errors import PotlutConfigError, PotlutFormatError


@dataclass
class Encoded:
    """A stream and what it decodes to: ``images[k]`` is the (k+1)-iteration image."""

    data: bytes
    counts: np.ndarray  # per-tile iteration counts (h x w)
    images: list[np.ndarray]  # uint8 H x W x 3 after each iteration
    trace: np.ndarray  # per-tile SSIM after each iteration (T x h x w)

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / (self.images[-1].shape[0] * self.images[-1].shape[1])


def fingerprint(model: RecurrentCodec) -> bytes:
    """8 bytes of SHA-256 over the weights (and the additive flag): a stream names the
    model that decodes it."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    if model.cfg.additive:  # the same weights decode differently (one-shot models unchanged)
        h.update(b"additive")
    return h.digest()[:8]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H' x W' in [-0.5, 0.5], edge-padded to multiples of 16."""
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255 - 0.5
    h, w = img.shape[:2]
    return F.pad(x, (0, -w % TILE, 0, -h % TILE), mode="replicate")


def to_image(x: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`to_tensor`: clamp, round, crop the padding."""
    y = ((x[0, :, :height, :width].clamp(-0.5, 0.5) + 0.5) * 255).round()
    return y.to(torch.uint8).permute(1, 2, 0).numpy()


def _header(model: RecurrentCodec, img_shape, iterations: int) -> StreamHeader:
    c = model.cfg
    return StreamHeader(img_shape[1], img_shape[0], iterations, c.bits, c.width, c.iterations,
                        c.prime_steps, c.diffuse_steps, fingerprint(model))


@torch.no_grad()
def encode(model: RecurrentCodec, img: np.ndarray, iterations: int | None = None,
           quality: float | None = None) -> Encoded:
    """Code ``img`` in ``iterations`` (default: the model's) iterations; with ``quality``,
    each tile stops at the first iteration where its SSIM is >= ``quality``."""
    n_max = model.cfg.iterations
    iterations = n_max if iterations is None else iterations
    if not 1 <= iterations <= n_max:
        raise PotlutConfigError(f"iterations must be in 1..{n_max}, not {iterations}")
    model.eval()
    x = to_tensor(img)
    h, w = img.shape[:2]
    th, tw = x.shape[2] // TILE, x.shape[3] // TILE
    counts = torch.full((1, 1, th, tw), iterations, dtype=torch.int64)
    enc, dec = model.init_state()
    recon = torch.zeros_like(x)
    codes, images, trace = [], [], []
    for t in range(iterations):
        active = counts > t
        c, enc = model.encoder(x - recon, enc)
        b = model.binarizer(c) * active
        out, dec = model.decode_step(b, dec, t == 0)
        recon = model.reconstruct(out, recon, active)
        codes.append(b[0].to(torch.int8).numpy())
        images.append(to_image(recon, h, w))
        rounded = ((recon.clamp(-0.5, 0.5) + 0.5) * 255).round() / 255 - 0.5
        q = block_ssim(x, rounded, TILE)[0]  # SSIM of the pixels the decoder will write
        trace.append(q.numpy())
        if quality is not None:
            done = active[0, 0] & (q >= quality)
            counts[0, 0][done] = t + 1
    counts_np = counts[0, 0].numpy()
    counts_chunk, _ = entropy.encode_counts(counts_np, n_max)
    chunks, _ = entropy.encode_codes(np.stack(codes), counts_np)
    data = write_stream(_header(model, img.shape, iterations), counts_chunk, chunks)
    return Encoded(data, counts_np, images, np.stack(trace))


def counts_for(trace: np.ndarray, quality: float) -> np.ndarray:
    """Per-tile counts that the first-iteration-at-target rule gives on an unmasked trace."""
    met = trace >= quality
    return np.where(met.any(0), met.argmax(0) + 1, trace.shape[0])


def encode_to_bpp(model: RecurrentCodec, img: np.ndarray, bpp: float,
                  adaptive: bool = True, tries: int = 4, full: Encoded | None = None) -> Encoded:
    """The largest-rate stream not above ``bpp``: the most iterations that fit, or
    (``adaptive``) a per-tile SSIM target, whichever reaches the higher rate.

    The target comes from the full-length encode: its per-tile SSIM trace and the average
    coded bits of a tile-iteration predict the rate of any target, so a bisection on the
    prediction costs nothing; real encodes then correct the prediction (a few tries).
    ``full`` reuses a full-length :func:`encode` of the same image.
    """
    if bpp <= 0:
        raise PotlutConfigError(f"--bpp must be positive, not {bpp}")
    full = full if full is not None else encode(model, img)
    sizes = progressive_bpp(full)
    fit = [k for k, b in enumerate(sizes, 1) if b <= bpp]
    if not fit:
        raise PotlutConfigError(f"{bpp} bpp is below this model's one-iteration rate "
                                f"({sizes[0]:.3f} bpp for this image)")
    best = full if fit[-1] == len(sizes) else encode(model, img, fit[-1])
    if not adaptive:
        return best
    tiles = full.trace[0].size
    per_tile = (sizes[-1] - sizes[0]) / max(len(sizes) - 1, 1) / tiles  # bpp per tile-iter
    base = sizes[0] - per_tile * tiles  # header and count side information

    def predicted(q: float) -> float:
        return base + per_tile * float(counts_for(full.trace, q).sum())

    goal = bpp
    for _ in range(tries):
        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if predicted(mid) <= goal else (lo, mid)
        cand = encode(model, img, quality=lo)
        if cand.bpp <= bpp and cand.bpp > best.bpp:
            best = cand
        if cand.bpp <= bpp and cand.bpp > 0.97 * bpp:
            break
        goal *= bpp / cand.bpp
    return best


def progressive_bpp(enc: Encoded) -> list[float]:
    """Rate in bpp of the stream truncated after 1, 2, ... iterations (real sizes)."""
    from potlut.codec.stream import truncate

    pixels = enc.images[0].shape[0] * enc.images[0].shape[1]
    head = read_stream(enc.data)[0]
    return [8 * len(truncate(enc.data, k)) / pixels for k in range(1, head.iterations + 1)]


@torch.no_grad()
def decode(model: RecurrentCodec, data: bytes, iterations: int | None = None) -> np.ndarray:
    """Decode a stream (its first ``iterations`` iterations when given) to H x W x 3 uint8."""
    head, counts_chunk, chunks = read_stream(data)
    c = model.cfg
    if head.fingerprint != fingerprint(model) or (head.bits, head.model_width,
                                                  head.model_iterations, head.prime_steps,
                                                  head.diffuse_steps) != (
            c.bits, c.width, c.iterations, c.prime_steps, c.diffuse_steps):
        raise PotlutFormatError("the stream was made by a different model (weight "
                                f"fingerprint {head.fingerprint.hex()}); decode with that one")
    k = head.iterations if iterations is None else min(iterations, head.iterations)
    if k < 1:
        raise PotlutConfigError(f"iterations must be at least 1, not {iterations}")
    th, tw = -(-head.height // TILE), -(-head.width // TILE)
    counts = entropy.decode_counts(counts_chunk, (th, tw), c.iterations)
    counts = np.minimum(counts, head.iterations)
    codes = entropy.decode_codes(chunks[:k], counts, c.bits)
    model.eval()
    dec = model.init_state()[1]
    recon = torch.zeros(1, 3, th * TILE, tw * TILE)
    active_all = torch.from_numpy(counts)[None, None]
    for t in range(k):
        active = active_all > t
        b = torch.from_numpy(codes[t]).float()[None] * active
        out, dec = model.decode_step(b, dec, t == 0)
        recon = model.reconstruct(out, recon, active)
    return to_image(recon, head.height, head.width)
