"""``potlut codec ...``: train, encode, decode, truncate and evaluate the recurrent codec."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import typer

from potlut.cli.app import app, user_errors
from potlut.errors import PotlutConfigError, PotlutFormatError

codec_app = typer.Typer(no_args_is_help=True, help="the recurrent image codec (.rnnc files)")
app.add_typer(codec_app, name="codec")

MODEL_HELP = "codec checkpoint written by `potlut codec train`"


def _threads() -> None:
    torch.set_num_threads(min(torch.get_num_threads(), 2))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PotlutFormatError(f"{path}: cannot read ({exc.strerror})") from None


@codec_app.command("train")
@user_errors
def train_cmd(
    data: Path = typer.Option(..., "--data", help="folder of photos (its training split)"),
    cifar: Path = typer.Option(None, "--cifar", help="also train on a CIFAR-10 folder"),
    out: Path = typer.Option(Path("runs/codec.pt"), "--out", help="checkpoint to write"),
    steps: int = typer.Option(500, help="optimizer steps"),
    batch: int = typer.Option(32, help="patches per step"),
    iterations: int = typer.Option(12, help="iterations trained (the most a stream holds)"),
    bits: int = typer.Option(32, help="bits per 16x16 tile per iteration"),
    width: int = typer.Option(64, help="channel unit of the GRU layers (multiple of 8)"),
    prime: int = typer.Option(2, help="priming: extra decoder steps before the first output"),
    diffuse: int = typer.Option(1, help="diffusion: extra decoder steps before later outputs"),
    additive: bool = typer.Option(False, "--additive",
                                  help="each iteration corrects the last image (else replaces it)"),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, "--resume", help="continue from --out"),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda"),
) -> None:
    """Train a codec on photo patches (checkpointed every 25 steps; --resume continues)."""
    from potlut.codec.model import CodecConfig
    from potlut.codec.train import CodecTrainConfig, load_training_images, train
    from potlut.train.loop import pick_device

    if min(steps, batch, iterations, bits) < 1 or width < 8 or width % 8 or min(prime,
                                                                             diffuse) < 0:
        raise PotlutConfigError("steps, batch, iterations, bits must be >= 1, width a "
                                "multiple of 8, prime and diffuse >= 0")
    if iterations > 255 or bits > 255:
        raise PotlutConfigError("iterations and bits must be at most 255 (stream header)")
    _threads()
    cfg = CodecConfig(bits=bits, iterations=iterations, width=width, prime_steps=prime,
                      diffuse_steps=diffuse, additive=additive)
    images = load_training_images(data, cifar)
    print(f"training on {len(images)} images, {steps} steps -> {out}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    train(images, out, cfg, CodecTrainConfig(steps=steps, batch=batch, seed=seed),
          resume=resume, device=str(pick_device(device)))
    print(f"wrote {out}")


@codec_app.command("encode")
@user_errors
def encode_cmd(
    image: Path = typer.Argument(..., help="image to code (PNG, JPEG, ...)"),
    output: Path = typer.Option(..., "-o", "--output", help=".rnnc file to write"),
    model: Path = typer.Option(..., "--model", help=MODEL_HELP),
    bpp: float = typer.Option(None, "--bpp", help="largest rate (bits per pixel)"),
    quality: float = typer.Option(None, "--quality", help="per-tile SSIM target in (0, 1]"),
    iterations: int = typer.Option(None, "--iterations", help="fixed iterations per tile"),
    fixed: bool = typer.Option(False, "--fixed", help="with --bpp: same count in every tile"),
) -> None:
    """Code an image; prints its real rate. Give one of --bpp, --quality, --iterations."""
    from potlut.codec.data import read_rgb
    from potlut.codec.encode import encode, encode_to_bpp
    from potlut.codec.train import load_model
    from potlut.fileio import atomic_write_bytes

    if sum(v is not None for v in (bpp, quality, iterations)) != 1:
        raise PotlutConfigError("give exactly one of --bpp, --quality, --iterations")
    if quality is not None and not 0 < quality <= 1:
        raise PotlutConfigError(f"--quality is an SSIM target in (0, 1], not {quality}")
    _threads()
    net = load_model(model)
    img = read_rgb(image)
    if bpp is not None:
        enc = encode_to_bpp(net, img, bpp, adaptive=not fixed)
    else:
        enc = encode(net, img, iterations, quality)
    atomic_write_bytes(output, enc.data)
    h, w = img.shape[:2]
    print(f"wrote {output}: {len(enc.data)} bytes = {enc.bpp:.4f} bpp ({w}x{h}), "
          f"iterations per tile {int(enc.counts.min())}..{int(enc.counts.max())} "
          f"(mean {enc.counts.mean():.2f})")


@codec_app.command("decode")
@user_errors
def decode_cmd(
    stream: Path = typer.Argument(..., help=".rnnc file"),
    output: Path = typer.Option(..., "-o", "--output", help="image to write (PNG)"),
    model: Path = typer.Option(..., "--model", help=MODEL_HELP),
    iterations: int = typer.Option(None, "--iterations", help="decode only the first k"),
) -> None:
    """Decode a .rnnc file (progressively: --iterations k gives the k-iteration image)."""
    from PIL import Image

    from potlut.codec.encode import decode
    from potlut.codec.train import load_model

    _threads()
    img = decode(load_model(model), _read(stream), iterations)
    try:
        Image.fromarray(img).save(output, format="PNG")
    except OSError as exc:
        raise PotlutConfigError(f"{output}: cannot write ({exc})") from None
    print(f"wrote {output} ({img.shape[1]}x{img.shape[0]})")


@codec_app.command("truncate")
@user_errors
def truncate_cmd(
    stream: Path = typer.Argument(..., help=".rnnc file"),
    output: Path = typer.Option(..., "-o", "--output", help=".rnnc file to write"),
    iterations: int = typer.Option(..., "--iterations", help="iterations to keep"),
) -> None:
    """Keep the first k iterations of a stream (a smaller file; no model needed)."""
    from potlut.codec.stream import truncate
    from potlut.fileio import atomic_write_bytes

    data = truncate(_read(stream), iterations)
    atomic_write_bytes(output, data)
    print(f"wrote {output}: {len(data)} bytes")


@codec_app.command("eval")
@user_errors
def eval_cmd(
    data: Path = typer.Argument(..., help="folder of photos"),
    model: Path = typer.Option(None, "--model", help=MODEL_HELP + " (default: train one)"),
    out: Path = typer.Option(Path("runs/codec-eval"), "--out", help="folder for rd.png/.md"),
    split: str = typer.Option("test", help="test (every fifth photo, held out), all, train"),
    limit: int = typer.Option(None, help="evaluate only the first N images"),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive",
                                  help="also the spatially adaptive rates (slower)"),
) -> None:
    """Rate-distortion curves (bpp vs MS-SSIM, PSNR) against JPEG, WebP, JPEG 2000."""
    from potlut.codec import data as codec_data
    from potlut.codec.evaluate import evaluate
    from potlut.codec.train import load_model, load_training_images, train

    if split not in ("test", "all", "train"):
        raise PotlutConfigError(f"--split is test, all or train, not {split!r}")
    _threads()
    if model is None:
        model = out / "codec.pt"
        print(f"no --model: training one into {model} (resumable)", file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        train(load_training_images(data, None), model, resume=True)
    net = load_model(model)
    paths = codec_data.split(codec_data.image_paths(data), split)[:limit]
    images = [(p.name, codec_data.read_rgb(p)) for p in paths]
    evaluate(net, images, out, adaptive=adaptive)
    print((out / "rd.md").read_text(), end="")
    print(f"wrote {out / 'rd.png'}, {out / 'rd.md'}, {out / 'rd.json'}")


@codec_app.command("merge-eval")
@user_errors
def merge_eval_cmd(
    results: list[Path] = typer.Argument(..., help="rd.json files of `potlut codec eval`"),
    out: Path = typer.Option(..., "--out", help="folder for the merged rd.png/.md/.json"),
) -> None:
    """Merge evaluations run in parallel (e.g. one image each) into one table and plot."""
    from potlut.codec.evaluate import merge

    merge(results, out)
    print((out / "rd.md").read_text(), end="")
