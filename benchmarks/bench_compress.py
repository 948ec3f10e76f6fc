"""Sizes of the quantized weights under every coder, next to the entropy bound.

Two models: SmallCNN on digits (``potlut run`` recipe, ``--epochs`` FP32 + QAT epochs)
and ResNet20 on digits upsampled to 3x32x32 (no CIFAR offline; same recipe). Every row
codes the same thing, the quantized conv/linear weights of all layers (4-bit IOS-PoT in
the middle, 8-bit fixed point at the ends); the last rows add the rest of the file.

    python benchmarks/bench_compress.py [--epochs 2] [--out runs/bench_compress]
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from potlut import data as data_mod
from potlut import models
from potlut.compress import rans, read
from potlut.compress.bounds import file_stats, layer_bound_bytes
from potlut.compress.container import compress_body
from potlut.compress.graph import ModelGraph
from potlut.compress.sharing import SharedWeights, pack_raw
from potlut.compress.shuff import decode_weights, encode_weights
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.export import compress_model, export_graph
from potlut.pipeline import RunConfig, load_quantized, run
from potlut.train import TrainConfig, fit

try:
    import zstandard
except ModuleNotFoundError:  # optional: pip install -e ".[bench]"
    zstandard = None


def digits_model(out: Path, epochs: int) -> tuple[torch.nn.Module, tuple[int, ...], str]:
    if not (out / "report.json").is_file():
        run(RunConfig(epochs=epochs, qat_epochs=epochs), out, progress=False)
    saved = json.loads((out / "report.json").read_text())["config"]
    cfg = RunConfig(**{k: v for k, v in saved.items() if k in RunConfig.__dataclass_fields__})
    return load_quantized(out, cfg), (1, 8, 8), f"SmallCNN, digits, {epochs}+{epochs} epochs"


def upsampled_digits():
    b = data_mod.load("digits")

    def up(ds):
        x, y = ds.tensors
        return TensorDataset(F.interpolate(x, size=32, mode="bilinear").repeat(1, 3, 1, 1), y)

    b.train, b.test, b.in_shape = up(b.train), up(b.test), (3, 32, 32)
    return b


def resnet_model(epochs: int) -> tuple[torch.nn.Module, tuple[int, ...], str]:
    b = upsampled_digits()
    torch.manual_seed(0)
    fp32 = models.build("resnet20", 10, 3)
    cfg = TrainConfig(epochs=epochs, device="cpu")
    fit(fp32, b, cfg, stage="fp32", progress=False)
    q = convert(fp32.cpu(), QuantSpec(bits=4))
    calibrate(q, b.calibration_batch())
    fit(q, b, cfg, stage="qat", progress=False)
    return q.cpu().eval(), (3, 32, 32), f"ResNet20, digits 3x32x32, {epochs}+{epochs} epochs"


def layers(graph: ModelGraph) -> list[tuple[SharedWeights, int]]:
    out = []
    for n in graph.quantized_layers():
        m = n.attrs["module"]
        a = graph.arrays
        sw = SharedWeights(a[f"{m}.weight.codes"], a[f"{m}.weight.negative"],
                           a[f"{m}.weight.codebook"])
        out.append((sw, int(n.attrs["weight"]["bits"])))
    return out


def sizes(qmodel: torch.nn.Module, in_shape: tuple[int, ...], path: Path) -> dict:
    graph = export_graph(qmodel, in_shape)
    ls = layers(graph)
    n = sum(sw.codes.size for sw, _ in ls)
    raw = b"".join(pack_raw(sw.codes, sw.negative, sw.n_codes) for sw, _ in ls)
    t = time.perf_counter()
    blobs = [encode_weights(sw) for sw, _ in ls]
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    for blob, (sw, _) in zip(blobs, ls, strict=True):
        decode_weights(blob, sw.codes.shape, sw.codebook)
    t_dec = time.perf_counter() - t
    xz_raw = lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)
    t = time.perf_counter()
    lzma.decompress(xz_raw)
    t_xz = time.perf_counter() - t
    shuff = b"".join(blobs)
    rans_blobs = [rans.encode_weights(sw) for sw, _ in ls]  # warm-up: numba compiles once
    t = time.perf_counter()
    rans_blobs = [rans.encode_weights(sw) for sw, _ in ls]
    t_renc = time.perf_counter() - t
    for blob, (sw, _) in zip(rans_blobs, ls, strict=True):
        rans.decode_weights(blob, sw.codes.shape, sw.codebook)
    t = time.perf_counter()
    for blob, (sw, _) in zip(rans_blobs, ls, strict=True):
        rans.decode_weights(blob, sw.codes.shape, sw.codebook)
    t_rdec = time.perf_counter() - t
    rans_all = b"".join(rans_blobs)
    st_rans = compress_model(qmodel, in_shape, path.with_suffix(".rans.potlut"), coder="rans")
    st = compress_model(qmodel, in_shape, path)
    fs = file_stats(*read(path))
    row = {
        "weights": n,
        "FP32": 4 * n,
        "raw b-bit packing": len(raw),
        "gzip -9 (raw packing)": len(gzip.compress(raw, 9, mtime=0)),
        "xz -9e (raw packing)": len(xz_raw),
    }
    if zstandard is not None:
        row["zstd -19 (raw packing)"] = len(zstandard.ZstdCompressor(level=19).compress(raw))
    row |= {
        "S-Huff (stage 1)": len(shuff),
        "S-Huff + LZMA (stage 1 + 2)": len(compress_body(shuff)[0]),
        "packed + LZMA (coder `packed`)": len(compress_body(raw)[0]),
        "S-Huff → rANS (stage 1, coder `rans`)": len(rans_all),
        "S-Huff → rANS + LZMA (stage 1 + 2)": len(compress_body(rans_all)[0]),
        "entropy bound": round(sum(layer_bound_bytes(sw.codes, sw.nonzero()) for sw, _ in ls)),
        "whole .potlut file": st["file_bytes"],
        "  of which overhead (header, arch, BN, bias, codebooks, code tables)":
            st["overhead_bytes"],
        "whole .potlut file, coder `rans`": st_rans["file_bytes"],
        "  of which overhead with `rans`": st_rans["overhead_bytes"],
        "whole model FP32 (weights + BN + bias)": st["fp32_bytes"],
        "_timing": {"shuff_encode_s": t_enc, "shuff_decode_s": t_dec, "xz_decode_s": t_xz,
                    "bound_gap": fs["bound_gap"], "rans_encode_s": t_renc,
                    "rans_decode_s": t_rdec,
                    "rans_bound_gap": file_stats(*read(path.with_suffix(".rans.potlut")))[
                        "bound_gap"]},
    }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="FP32 and QAT epochs per model")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_compress"))
    ap.add_argument("--models", default="digits,resnet20", help="comma list to measure")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results, titles = [], []
    for build, name in ((lambda: digits_model(args.out / "digits", args.epochs), "digits"),
                        (lambda: resnet_model(args.epochs), "resnet20")):
        if name not in args.models.split(","):
            continue
        t = time.time()
        qmodel, in_shape, title = build()
        results.append(sizes(qmodel, in_shape, args.out / f"{name}.potlut"))
        titles.append(title)
        print(f"# {title}: trained and measured in {time.time() - t:.0f} s", flush=True)
    head = " | ".join(f"{t} (bytes, ×FP32)" for t in titles)
    print(f"\n| quantized weights coded as | {head} |\n|---|" + "---:|" * len(titles))
    for key in results[0]:
        if key.startswith("_") or key == "weights":
            continue
        cells = []
        for r in results:
            fp = r["whole model FP32 (weights + BN + bias)"] if "whole" in key else r["FP32"]
            v = r[key]
            cells.append(f"{v:,} ({fp / v:.2f}×)" if "overhead" not in key else f"{v:,}")
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("\nweights per model: " + ", ".join(f"{r['weights']:,}" for r in results))
    for title, r in zip(titles, results, strict=True):
        tm = r["_timing"]
        print(f"{title}: S-Huff decode {tm['shuff_decode_s'] * 1e3:.1f} ms "
              f"({tm['shuff_decode_s'] / tm['xz_decode_s']:.2f}× xz decode of the raw packing), "
              f"encode {tm['shuff_encode_s'] * 1e3:.1f} ms; file coded weights "
              f"{100 * tm['bound_gap']:+.1f}% vs entropy bound; rANS decode "
              f"{tm['rans_decode_s'] * 1e3:.1f} ms, encode {tm['rans_encode_s'] * 1e3:.1f} ms, "
              f"file coded weights {100 * tm['rans_bound_gap']:+.2f}% vs entropy bound")
    print(f"zstandard: {'installed' if zstandard else 'not installed (row omitted)'}; "
          f"lzma {lzma.__name__}, numpy {np.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
