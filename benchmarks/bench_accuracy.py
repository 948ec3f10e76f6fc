"""Accuracy of IOS-PoT QAT on real images: FP32 (same total epochs) vs 2/3/4 bits, and ablations.

ResNet20 on the CIFAR-10 sample (../shared/data, validation split). One FP32 model per seed
is trained for ``--epochs`` and every QAT variant starts from it; the FP32 reference is a
second FP32 run of ``--epochs + --qat-epochs`` epochs, so Delta is quantization alone.
A variant is scored by the mean test Top-1 of its last ``--last`` epochs, averaged over seeds
(761 validation images: one image is 0.13 points, one run's noise about 1.8).

    PYTHONPATH=src python benchmarks/bench_accuracy.py --epochs 20 --qat-epochs 20 --seeds 0 1 2

Rows (``--rows``): ``fp32``, ``recipe-B`` (the recipe at B bits), and the ablation rows at 3
bits listed in ``ABLATION``. Results are cached per row in ``--cache`` (JSON), so an
interrupted run resumes and a table can be re-printed with ``--print-only``.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from potlut import data as data_mod
from potlut import models
from potlut.nn.convert import QuantSpec, calibrate, convert
from potlut.train.loop import TrainConfig, fit

SAMPLE = "shared/data/cifar10-sample"
# ../shared next to the repository root, or above it (worktrees one level deeper)
DEFAULT_DATA = "cifar10:" + str(next(
    (p / SAMPLE for p in Path(__file__).resolve().parents[1:] if (p / SAMPLE).is_dir()),
    Path("..") / SAMPLE))

# the recipe: unsigned post-ReLU activations, cosine schedule, distribution loss with its share
# of the task gradient learned, weights normalized per output channel at >= 4 bits (auto)
RECIPE = {"act_signed": False, "schedule": "cosine", "dist_loss": "learnable",
          "weight_norm": "auto"}
# ablation rows at 3 bits: (label, overrides of RECIPE)
ABLATION = {
    "issue": ("as filed: signed, paper steps, exp(-s)·ΣD+s",
              {"act_signed": True, "schedule": "paper", "dist_loss": "uncertainty"}),
    "cosine": ("+ cosine schedule", {"act_signed": True, "dist_loss": "uncertainty"}),
    "paper-mode": ("+ new learnable dist. loss (signed acts: the paper's mode)",
                   {"act_signed": True}),
    "off": ("recipe, distribution loss off", {"dist_loss": "off"}),
    "fixed": ("recipe, distribution loss fixed lambda=1", {"dist_loss": "fixed"}),
    "uncertainty": ("recipe, old exp(-s)·ΣD+s", {"dist_loss": "uncertainty"}),
    "qat-lr": ("recipe, QAT lr 0.01 (FP32 0.04)", {"lr": 0.01}),
    "qat-lr2": ("recipe, QAT lr 0.02 (FP32 0.04)", {"lr": 0.02}),
    "ratio-0.01": ("recipe, fixed ratio 1 %", {"dist_loss": "ratio", "dist_ratio": 0.01}),
    "ramp-0.1": ("recipe, fixed ratio ramped 0 -> 10 % (late pull)",
                 {"dist_loss": "ratio", "dist_ratio": 0.1, "dist_ramp": True}),
    "ratio-0.001": ("recipe, fixed ratio 0.1 %", {"dist_loss": "ratio", "dist_ratio": 0.001}),
    "ratio": ("recipe, fixed ratio 1 % (the learnable form of session 4)",
              {"dist_loss": "ratio"}),
    "wn-layer": ("recipe, weights normalized per layer (METHODS §1.1)", {"weight_norm": "layer"}),
    "wn-channel": ("recipe, weights normalized per output channel",
                   {"weight_norm": "channel"}),
    "kd": ("recipe + distillation from the FP32 start (0.5, T=4)", {"kd": 0.5}),
    # the learnable share's start: ~0 is the default since 2026-12-08 (the recipe rows of the
    # results files before that date started at 1 %, as "learn1" does now)
    "learn0": ("recipe, learnable share started at ~0 (the default)", {"dist_ratio": 1e-9}),
    "learn1": ("recipe, learnable share started at 1 % (the default before 2026-12-08)",
               {"dist_ratio": 0.01}),
}


def fp32_model(bundle, seed: int, epochs: int, cache: Path, base: TrainConfig):
    """Train (or load from ``cache``) the FP32 ResNet20 of ``seed`` and its history."""
    path = cache / f"fp32_s{seed}_e{epochs}.pt"
    torch.manual_seed(seed)
    model = models.build("resnet20", bundle.num_classes, bundle.in_channels)
    if path.exists():
        state = torch.load(path, weights_only=False)
        model.load_state_dict(state["model"])
        return model, state["history"]
    hist = fit(model, bundle, replace(base, epochs=epochs, seed=seed), stage="fp32",
               progress=False)
    history = [e.test_top1 for e in hist.epochs]
    torch.save({"model": model.state_dict(), "history": history}, path)
    return model, history


def qat(fp32, bundle, bits: int, seed: int, epochs: int, base: TrainConfig, opts: dict):
    """QAT from a copy of ``fp32`` with the options ``opts``; returns the test Top-1 history."""
    spec = QuantSpec(bits=bits, act_signed=opts["act_signed"],
                     weight_norm=opts["weight_norm"])
    qmodel = convert(copy.deepcopy(fp32), spec)
    calibrate(qmodel, bundle.calibration_batch())
    cfg = replace(base, epochs=epochs, seed=seed, schedule=opts["schedule"],
                  dist_loss=opts["dist_loss"], lr=opts.get("lr", base.lr),
                  dist_ratio=opts.get("dist_ratio", base.dist_ratio),
                  dist_ramp=opts.get("dist_ramp", False), kd=opts.get("kd", 0.0))
    hist = fit(qmodel, bundle, cfg, stage="qat", progress=False, teacher=fp32)
    lam = [e.dist_lambda if e.dist_ratio is None else [e.dist_lambda, e.dist_ratio]
           for e in hist.epochs]
    return qmodel, [e.test_top1 for e in hist.epochs], lam


def fp32_continued(fp32, bundle, seed: int, epochs: int, base: TrainConfig, opts: dict):
    """``fp32`` trained on unquantized with the QAT stage's schedule (as ``potlut run``'s
    FP32 reference): same start, epochs, schedule and batch order, so Δ is quantization alone."""
    ref = copy.deepcopy(fp32)
    cfg = replace(base, epochs=epochs, seed=seed, schedule=opts["schedule"], dist_loss="off",
                  lr=opts.get("lr", base.lr), kd=opts.get("kd", 0.0))
    hist = fit(ref, bundle, cfg, stage="fp32_ref", progress=False, teacher=fp32)
    return [e.test_top1 for e in hist.epochs]


def row_key(row: str, seed: int, args) -> str:
    return f"{row}|s{seed}|e{args.epochs}|q{args.qat_epochs}"


def run_row(row: str, seed: int, args, bundle, results: dict, cache: Path) -> None:
    key = row_key(row, seed, args)
    if key in results:
        return
    base = TrainConfig(schedule="cosine")
    t0 = time.time()
    if row == "fp32-start":  # only the FP32 model QAT starts from (to fill the cache first)
        _, hist = fp32_model(bundle, seed, args.epochs, cache, base)
        lam = None
    elif row == "fp32":  # the reference: FP32 for the same total epochs as FP32 + QAT
        _, hist = fp32_model(bundle, seed, args.epochs + args.qat_epochs, cache, base)
        lam = None
    elif row.startswith("fp32-cont"):  # "fp32-cont" or "fp32-cont+ABLATION" (its schedule)
        fp32, _ = fp32_model(bundle, seed, args.epochs, cache, base)
        over = ABLATION[row.partition("+")[2]][1] if "+" in row else {}
        hist, lam = fp32_continued(fp32, bundle, seed, args.qat_epochs, base,
                                   {**RECIPE, **over}), None
    else:
        fp32, _ = fp32_model(bundle, seed, args.epochs, cache, base)
        if row.startswith("recipe-"):
            bits, opts = int(row.split("-")[1]), dict(RECIPE)
        else:  # an ablation row, at 3 bits unless it says "@B"
            name, _, b = row.partition("@")
            bits, opts = int(b or 3), {**RECIPE, **ABLATION[name][1]}
        qmodel, hist, lam = qat(fp32, bundle, bits, seed, args.qat_epochs, base, opts)
        torch.save({"model": qmodel.state_dict(), "bits": bits, "opts": opts},
                   cache / f"{key.replace('|', '_')}.pt")
    results[key] = {"history": hist, "lambda": lam, "seconds": round(time.time() - t0, 1)}
    print(f"{key}: last {args.last} mean {sum(hist[-args.last:]) / args.last:.2f} "
          f"final {hist[-1]:.2f} ({results[key]['seconds']} s)", file=sys.stderr, flush=True)


def score(results: dict, row: str, args) -> tuple[float, int] | None:
    vals = []
    for s in args.seeds:
        r = results.get(row_key(row, s, args))
        if r is not None:
            vals.append(sum(r["history"][-args.last:]) / args.last)
    return (sum(vals) / len(vals), len(vals)) if vals else None


def _label(row: str, args) -> str:
    name, _, over = row.partition("+")
    if row == "fp32":
        return f"FP32, {args.epochs + args.qat_epochs} epochs"
    if row == "fp32-start":
        return f"FP32, {args.epochs} epochs (QAT's start)"
    if name == "fp32-cont":
        return (f"FP32 continued {args.epochs} + {args.qat_epochs} epochs"
                + (f" ({ABLATION[over][0]})" if over else ""))
    if row.startswith("recipe-"):
        return f"IOS-PoT {row.split('-')[1]}-bit (recipe)"
    abl, _, bits = row.partition("@")
    return f"{bits or 3}-bit: {ABLATION[abl][0]}"


def table(results: dict, args) -> str:
    """Markdown table: each row's score, Δ against the fresh FP32 run and against the FP32
    model continued with the QAT schedule (same start, epochs and schedule as QAT)."""
    ref, cont = score(results, "fp32", args), score(results, "fp32-cont", args)
    lines = [f"| row | test Top-1 (mean of last {args.last} epochs, mean of seeds) | "
             "Δ vs FP32 fresh | Δ vs FP32 continued | seeds |", "|---|---:|---:|---:|---:|"]
    for row in args.rows:
        sc = score(results, row, args)
        if sc is None:
            continue
        quant = not row.startswith("fp32")
        d1 = f"{sc[0] - ref[0]:+.2f}" if ref and quant else ""
        d2 = f"{sc[0] - cont[0]:+.2f}" if cont and quant else ""
        lines.append(f"| {_label(row, args)} | {sc[0]:.2f} | {d1} | {d2} | {sc[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=20, help="FP32 epochs before QAT")
    p.add_argument("--qat-epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--last", type=int, default=5, help="score: mean of the last N epochs")
    p.add_argument("--rows", nargs="+",
                   default=["fp32", "recipe-4", "recipe-3", "recipe-2", *ABLATION])
    p.add_argument("--cache", default="bench_accuracy_cache")
    p.add_argument("--print-only", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    res_path = cache / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    if not args.print_only:
        bundle = data_mod.load(args.data)
        for seed in args.seeds:
            for row in args.rows:
                run_row(row, seed, args, bundle, results, cache)
                with open(cache / "results.lock", "w") as lock:  # parallel runs share the file
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    fresh = json.loads(res_path.read_text()) if res_path.exists() else {}
                    results = {**fresh, **results}
                    tmp = res_path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(results, indent=1))
                    tmp.replace(res_path)
    print(table(results, args))


if __name__ == "__main__":
    main()
