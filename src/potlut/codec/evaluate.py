"""Rate-distortion evaluation: the codec against JPEG, WebP and JPEG 2000 (Pillow).

Every point is a real file: the .rnnc stream's bytes, or the bytes Pillow writes. At a
target rate each method gets its best setting whose file is not above the target
(matched rates: no method is given more bits than the target). JPEG is optimized with
4:2:0 chroma subsampling; WebP uses method 6; JPEG 2000 is rate-controlled (irreversible
9/7 wavelet). MS-SSIM and PSNR are over RGB, MS-SSIM from pytorch-msssim.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_msssim import ms_ssim

from potlut.codec.encode import encode, encode_to_bpp, progressive_bpp
from potlut.codec.model import RecurrentCodec
from potlut.errors import PotlutDataError
from potlut.fileio import atomic_write_bytes

TARGETS = (0.25, 0.5, 1.0)
CURVE = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.25, 1.5)
RNN_FIXED, RNN_ADAPTIVE = "RNN (fixed iterations)", "RNN (adaptive)"
MIN_SIDE = 160  # pytorch-msssim's 5-scale MS-SSIM with an 11-pixel window
METHODS = (RNN_ADAPTIVE, RNN_FIXED, "JPEG", "WebP", "JPEG 2000")


def msssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two H x W x 3 uint8 images (pytorch-msssim, data range 255)."""
    ta, tb = (torch.from_numpy(np.array(v, dtype=np.float32)).permute(2, 0, 1)[None]
              for v in (a, b))
    return float(ms_ssim(ta, tb, data_range=255.0))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-12))


def pillow_encode(img: np.ndarray, fmt: str, setting: float) -> tuple[int, np.ndarray]:
    """Bytes written and decoded image of ``img`` through Pillow's ``fmt`` at ``setting``
    (quality for JPEG / WebP, bits per pixel for JPEG 2000)."""
    buf = io.BytesIO()
    im = Image.fromarray(img)
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=int(setting), optimize=True, subsampling=2)
    elif fmt == "WebP":
        im.save(buf, "WEBP", quality=int(setting), method=6)
    else:
        im.save(buf, "JPEG2000", quality_mode="rates", quality_layers=[24.0 / setting],
                irreversible=True)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as dec:
        return len(data), np.asarray(dec.convert("RGB"))


def pillow_at_most(img: np.ndarray, fmt: str, bpp: float) -> tuple[float, np.ndarray] | None:
    """The highest-rate ``fmt`` file not above ``bpp`` (None when even the lowest is above)."""
    pixels = img.shape[0] * img.shape[1]
    if fmt == "JPEG 2000":
        rate = bpp
        for _ in range(8):  # the rate control lands close; step down until it fits
            size, dec = pillow_encode(img, fmt, rate)
            if 8 * size <= bpp * pixels:
                return 8 * size / pixels, dec
            rate *= 0.97 * bpp * pixels / (8 * size)
        return None
    lo, hi, best = 0 if fmt == "WebP" else 1, 100 if fmt == "WebP" else 95, None
    while lo <= hi:  # file size grows with quality (bisection on it)
        q = (lo + hi) // 2
        size, dec = pillow_encode(img, fmt, q)
        if 8 * size <= bpp * pixels:
            best, lo = (8 * size / pixels, dec), q + 1
        else:
            hi = q - 1
    return best


def _point(img: np.ndarray, bpp: float, rec: np.ndarray) -> dict:
    return {"bpp": bpp, "ms_ssim": msssim(img, rec), "psnr": psnr(img, rec)}


def evaluate_image(model: RecurrentCodec, img: np.ndarray, targets=TARGETS,
                   curve=CURVE, adaptive: bool = True) -> dict:
    """Points {method: {target: point or None}} of one image; targets and curve merged."""
    rates = sorted(set(targets) | set(curve))
    full = encode(model, img)
    sizes = progressive_bpp(full)
    out: dict = {m: {} for m in METHODS}
    for r in rates:
        fit = [k for k, b in enumerate(sizes) if b <= r]
        out[RNN_FIXED][r] = _point(img, sizes[fit[-1]], full.images[fit[-1]]) if fit else None
        for fmt in METHODS[2:]:
            got = pillow_at_most(img, fmt, r)
            out[fmt][r] = _point(img, *got) if got else None
    if adaptive:
        for r in targets:
            if r < sizes[0]:
                out[RNN_ADAPTIVE][r] = None
                continue
            enc = encode_to_bpp(model, img, r, full=full)
            out[RNN_ADAPTIVE][r] = _point(img, enc.bpp, enc.images[-1])
    return out


def summarize(per_image: list[dict]) -> dict:
    """Means over images of each method at each rate, over the images where it fits."""
    summary: dict = {}
    for m in METHODS:
        for r in sorted({r for d in per_image for r in d[m]}):
            pts = [d[m][r] for d in per_image if d[m].get(r)]
            if pts:
                summary.setdefault(m, {})[r] = {
                    "n": len(pts), **{k: float(np.mean([p[k] for p in pts]))
                                      for k in ("bpp", "ms_ssim", "psnr")}}
    return summary


def markdown_table(summary: dict, n_images: int, targets=TARGETS) -> str:
    """Mean bpp / MS-SSIM / PSNR per method at each target rate."""
    head = "| method | " + " | ".join(f"≤ {t} bpp: bpp, MS-SSIM, PSNR" for t in targets) + " |"
    lines = [head, "|---" * (len(targets) + 1) + "|"]
    for m in METHODS:
        cells = []
        for t in targets:
            p = summary.get(m, {}).get(t)
            if p is None:
                cells.append("n/a")
            else:
                note = "" if p["n"] == n_images else f" ({p['n']}/{n_images} images)"
                cells.append(f"{p['bpp']:.3f}, {p['ms_ssim']:.4f}, {p['psnr']:.2f} dB{note}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """MS-SSIM (left) and PSNR (right) against bpp, one line per method."""
    from potlut.report import _canvas, _save

    fig, ax = _canvas(1, 2, 6, 4.5)
    for m in METHODS:
        pts = sorted(summary.get(m, {}).values(), key=lambda p: p["bpp"])
        if pts:
            style = "o-" if m.startswith("RNN") else ".--"
            for i, key in enumerate(("ms_ssim", "psnr")):
                ax[0, i].plot([p["bpp"] for p in pts], [p[key] for p in pts], style, label=m)
    for i, name in enumerate(("MS-SSIM (RGB)", "PSNR (dB, RGB)")):
        ax[0, i].set_xlabel("bits per pixel (real file size)")
        ax[0, i].set_ylabel(name)
        ax[0, i].grid(alpha=0.3)
        if ax[0, i].get_legend_handles_labels()[0]:  # no points (every image skipped)
            ax[0, i].legend()
    _save(fig, path)


def write_results(names: list[str], per_image: list[dict], out: Path) -> dict:
    """Summary, ``rd.md``, ``rd.json`` and ``rd.png`` of per-image results."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(per_image)
    atomic_write_bytes(out / "rd.md", markdown_table(summary, len(names)).encode())
    atomic_write_bytes(out / "rd.json", json.dumps(
        {"images": names, "per_image": [
            {m: {str(r): p for r, p in d[m].items()} for m in d} for d in per_image],
         "summary": {m: {str(r): p for r, p in s.items()} for m, s in summary.items()}},
        indent=1).encode())
    plot(summary, out / "rd.png")
    return summary


def merge(paths: list[Path], out: Path) -> dict:
    """One result of several ``rd.json`` files (an evaluation split over processes)."""
    names, per_image = [], []
    for path in paths:
        try:
            d = json.loads(Path(path).read_text())
            names += d["images"]
            per_image += [{m: {float(r): p for r, p in pts.items()} for m, pts in img.items()}
                          for img in d["per_image"]]
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise PotlutDataError(f"{path}: not an rd.json of `potlut codec eval` ({exc})") \
                from None
    return write_results(names, per_image, out)


def evaluate(model: RecurrentCodec, images: list[tuple[str, np.ndarray]], out: Path,
             adaptive: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Evaluate every image; write ``rd.json``, ``rd.md`` and ``rd.png`` under ``out``."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    small = [n for n, im in images if min(im.shape[:2]) <= MIN_SIDE]
    if small:
        log(f"skipped (MS-SSIM's 5 scales need a side above {MIN_SIDE} pixels): "
            + ", ".join(small))
    images = [(n, im) for n, im in images if min(im.shape[:2]) > MIN_SIDE]
    out.mkdir(parents=True, exist_ok=True)
    per_image = []
    for i, (name, img) in enumerate(images, 1):
        per_image.append(evaluate_image(model, img, adaptive=adaptive))
        log(f"[{i}/{len(images)}] {name}: " + ", ".join(
            f"{m} {p['bpp']:.2f} bpp {p['ms_ssim']:.4f}"
            for m in (RNN_ADAPTIVE, RNN_FIXED, "JPEG") if (p := per_image[-1][m].get(0.5))))
    return write_results([n for n, _ in images], per_image, out)
