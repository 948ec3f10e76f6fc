"""Training of the recurrent codec on image patches: resumable, seeded per step, logged.

Each step draws a batch of 32x32 patches, runs ``cfg.iterations`` iterations and sums the
SSIM-weighted L1 of every iteration's reconstruction. A quarter of the patches get random
per-tile stop counts (their later codes are zeros, their pixels frozen) so the decoder
learns the streams that spatially adaptive allocation writes. Step ``s`` seeds its own
patches and binarizer noise from ``(seed, s)``, so a run resumed from its checkpoint draws
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from potlut.codec.data import Patches, cifar_images, image_paths, read_rgb, split
from potlut.codec.loss import ssim_weighted_l1
from potlut.codec.model import TILE, CodecConfig, RecurrentCodec
from potlut.errors import PotlutCheckpointError, PotlutConfigError
from potlut.train.checkpoint import load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class CodecTrainConfig:
    """Optimization settings (the network's sizes are :class:`CodecConfig`)."""

    steps: int = 500
    batch: int = 32
    patch: int = 32
    lr: float = 1e-3
    stop_fraction: float = 0.25  # share of patches trained with random per-tile stops
    seed: int = 0
    save_every: int = 25


def load_training_images(photos: str | Path, cifar: str | Path | None) -> list[np.ndarray]:
    """The training split of the photo folder, plus every CIFAR image when given."""
    images = [read_rgb(p) for p in split(image_paths(photos), "train")]
    if cifar is not None:
        images += cifar_images(cifar)
    return images


def _lr(tc: CodecTrainConfig, step: int) -> float:
    """Cosine decay from ``lr`` to ``lr / 100`` over the run."""
    return tc.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / max(tc.steps, 1))))


def _stops(n: int, tiles: int, iterations: int, fraction: float,
           gen: torch.Generator) -> torch.Tensor:
    """N x 1 x t x t stop counts: ``iterations`` (no stop) or, for a ``fraction`` of the
    patches, a random count in 1..iterations per tile."""
    rnd = torch.randint(1, iterations + 1, (n, 1, tiles, tiles), generator=gen)
    full = torch.full_like(rnd, iterations)
    pick = torch.rand(n, 1, 1, 1, generator=gen) < fraction
    return torch.where(pick, rnd, full)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> RecurrentCodec:
    """A codec from a training checkpoint (or an exported model file), in eval mode."""
    state = load_checkpoint(path, map_location=device)
    if "codec_config" not in state:
        raise PotlutCheckpointError(f"{path}: not a codec checkpoint (no codec_config)")
    try:
        model = RecurrentCodec(CodecConfig(**state["codec_config"]))
        model.load_state_dict(state["model"])
    except (TypeError, RuntimeError) as exc:
        raise PotlutCheckpointError(f"{path}: codec weights do not match their config "
                                    f"({str(exc).splitlines()[0][:120]})") from None
    return model.to(device).eval()


def train(images: list[np.ndarray], out: str | Path, cfg: CodecConfig | None = None,
          tc: CodecTrainConfig | None = None, resume: bool = False, device: str = "cpu",
          log=None) -> RecurrentCodec:
    """Train (or continue training) a codec; checkpoint to ``out`` every ``save_every`` steps."""
    cfg, tc = cfg or CodecConfig(), tc or CodecTrainConfig()
    if tc.patch % TILE:
        raise PotlutConfigError(f"--patch must be a multiple of {TILE}, not {tc.patch}")
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    dev = torch.device(device)
    torch.manual_seed(tc.seed)
    model = RecurrentCodec(cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    start = 0
    out = Path(out)
    if resume and out.is_file():
        state = load_checkpoint(out, map_location=dev)
        if state.get("codec_config") != cfg.to_dict() or state.get("train_config") != asdict(tc):
            raise PotlutCheckpointError(f"{out}: checkpoint of a different configuration; "
                                        "use the same options or another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        log(f"resumed from {out} at step {start}")
    patches = Patches(images, tc.patch, tc.seed)
    model.train()
    t0, seen = time.time(), 0
    for step in range(start, tc.steps):
        patches.rng = np.random.default_rng([tc.seed, step])
        gen = torch.Generator().manual_seed(tc.seed * 1_000_003 + step)
        torch.manual_seed(tc.seed * 1_000_003 + step)
        x = patches.batch(tc.batch).to(dev)
        stop = _stops(tc.batch, tc.patch // TILE, cfg.iterations, tc.stop_fraction, gen).to(dev)
        for g in opt.param_groups:
            g["lr"] = _lr(tc, step)
        outs, _ = model(x, cfg.iterations, stop)
        losses = [ssim_weighted_l1(x, o) for o in outs]
        loss = torch.stack(losses).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += 1
        done = step + 1
        if done % tc.save_every == 0 or done == tc.steps:
            save_checkpoint(out, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                  "step": done, "codec_config": cfg.to_dict(),
                                  "train_config": asdict(tc)})
        if done % 10 == 0 or done == tc.steps:
            with torch.no_grad():
                mse = [float(((x - o.clamp(-0.5, 0.5)) ** 2).mean()) for o in outs]
            psnr = [10 * math.log10(1 / max(m, 1e-10)) for m in mse]
            eta = (time.time() - t0) / seen * (tc.steps - done)
            log(f"step {done}/{tc.steps}  loss {float(loss.detach()):.4f}  PSNR it1 {psnr[0]:.1f} "
                f"it{len(psnr) // 2} {psnr[len(psnr) // 2 - 1]:.1f} it{len(psnr)} "
                f"{psnr[-1]:.1f} dB  eta {eta / 60:.0f} min")
    return model.eval()
