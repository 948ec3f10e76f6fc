"""One switchable model against one model per bit-width, and the teacher / swapping ablation.

From one FP32 model (``--epochs``), every row trains ``--qat-epochs`` QAT epochs: the
*separate* rows one model per width alone, the *switchable* rows one model for all widths
jointly (train/switchable.py), with the collaborative teacher and dynamic block swapping
each on or off. Same FP32 start, same epoch count (a joint epoch runs every width on each
batch), same recipe. Score: test Top-1 at the end, mean over ``--seeds``. The full
switchable model (teacher + swapping) is also written as one multi-bit .potlut file and
every width is run by the integer engine; its size is set against the separate files.

    PYTHONPATH=src python benchmarks/bench_switchable.py --bits 2,3,4,8 --epochs 40 --qat-epochs 20

Results are cached per (row, seed) in ``--cache`` (JSON), so an interrupted run resumes;
the Markdown table goes to stdout and to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

from potlut import data as data_mod
from potlut import models
from potlut.nn import QuantSpec, quantize
from potlut.nn.switchable import parse_widths, quantize_switchable, width_scheme
from potlut.train import TrainConfig, fit
from potlut.train.switchable import SwitchConfig, fit_switchable

ROWS = {  # label, teacher, swap
    "full": ("switchable: teacher + swapping", True, True),
    "teacher": ("switchable: teacher only", True, False),
    "swap": ("switchable: swapping only", False, True),
    "none": ("switchable: neither", False, False),
}


def fp32_model(args, bundle, seed: int, cache: Path):
    path = cache / f"fp32_{args.model}_s{seed}_e{args.epochs}.pt"
    torch.manual_seed(seed)
    model = models.build(args.model, bundle.num_classes, bundle.in_channels)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    fit(model, bundle, TrainConfig(epochs=args.epochs, seed=seed, lr=args.lr), progress=False)
    torch.save(model.state_dict(), path)
    return model


def separate(args, bundle, fp32, bits: int, seed: int) -> dict:
    spec = QuantSpec(scheme=width_scheme("iospot", bits), bits=bits,
                     act_signed=not args.unsigned_acts)
    q = quantize(fp32, spec, calibration=bundle.calibration_batch())
    hist = fit(q, bundle, TrainConfig(epochs=args.qat_epochs, seed=seed, lr=args.lr),
               stage="qat", progress=False)
    out = {"top1": hist.epochs[-1].test_top1}
    if args.files:
        from potlut.nn.export import compress_model

        path = Path(args.cache) / f"sep_{bits}_s{seed}.potlut"
        out["file_bytes"] = compress_model(q.eval(), bundle.in_shape, path)["file_bytes"]
    return out


def switchable(args, bundle, fp32, row: str, seed: int) -> dict:
    _, teacher, swap = ROWS[row]
    spec = QuantSpec(act_signed=not args.unsigned_acts)
    sm = quantize_switchable(fp32, spec, args.widths, bundle.calibration_batch())
    _, acc = fit_switchable(sm, bundle, TrainConfig(epochs=args.qat_epochs, seed=seed,
                                                     lr=args.lr),
                            SwitchConfig(teacher=teacher, swap=swap), progress=False)
    out = {"top1": {str(b): a for b, a in acc.items()}}
    if row == "full" and args.files:
        from potlut.compress.multibit import load_width
        from potlut.evaluation import evaluate_int
        from potlut.infer import IntEngine, lower, run_reference
        from potlut.nn.switchable import export_multibit

        path = Path(args.cache) / f"multi_s{seed}.potlut"
        st = export_multibit(sm.eval(), bundle.in_shape, path)
        x = torch.stack([bundle.test[i][0] for i in range(min(256, len(bundle.test)))]).numpy()
        out["file_bytes"] = st["file_bytes"]
        out["separate_bytes"] = st["separate_bytes"]
        out["int_top1"], out["bit_exact"] = {}, {}
        for b in args.widths:
            g = load_width(path, b)
            engine = IntEngine(g)
            out["int_top1"][str(b)] = evaluate_int(engine, bundle.test)[0]
            out["bit_exact"][str(b)] = bool((engine.run(x) == run_reference(lower(g), x)).all())
    return out


def cached(cache: Path, key: str, make) -> dict:
    path = cache / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.time()
    res = make()
    res["seconds"] = round(time.time() - t0, 1)
    path.write_text(json.dumps(res))
    print(f"{key}: {res}", file=sys.stderr)
    return res


def table(args, results: dict) -> list[str]:
    seeds = args.seeds
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    head = ["width", "separate (one model per width)"] + [ROWS[r][0] for r in args.rows]
    lines = ["| " + " | ".join(head + ["Δ full vs separate"]) + " |",
             "|---|" + "---:|" * len(head)]
    for b in args.widths:
        sep = mean([results["sep", b, s]["top1"] for s in seeds])
        cells = [f"{b}-bit", f"{sep:.2f}"]
        full = None
        for r in args.rows:
            v = mean([results[r, s]["top1"][str(b)] for s in seeds])
            full = v if r == "full" else full
            cells.append(f"{v:.2f}")
        cells.append("" if full is None else f"{full - sep:+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if args.files and "full" in args.rows:
        s0 = seeds[0]
        f = results["full", s0]
        sep_files = sum(results["sep", b, s0]["file_bytes"] for b in args.widths)
        lines += ["", f"Engine Top-1 of the multi-bit file (seed {s0}): " + ", ".join(
            f"{b}-bit {f['int_top1'][str(b)]:.2f}" for b in args.widths)
            + "; bit-exact with the int64 reference on 256 test images: "
            + ", ".join(f"{b}-bit {'yes' if f['bit_exact'][str(b)] else 'NO'}"
                        for b in args.widths) + ".",
            f"One multi-bit file {f['file_bytes']:,} B; the separately trained models' files "
            f"{sep_files:,} B together; the switchable model's widths as separate files "
            f"{f['separate_bytes']:,} B."]
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--bits", default="2,3,4,8")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--qat-epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.04)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--unsigned-acts", action="store_true")
    p.add_argument("--no-files", dest="files", action="store_false")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default="runs/bench_switchable")
    p.add_argument("--out", default=None, help="also write the table here (Markdown)")
    args = p.parse_args(argv)
    args.widths = parse_widths(args.bits)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache) / f"{args.data.replace(':', '_').replace('/', '_')}_{args.model}" \
        f"_b{'-'.join(map(str, args.widths))}_e{args.epochs}_q{args.qat_epochs}" \
        f"{'_u' if args.unsigned_acts else ''}"
    cache.mkdir(parents=True, exist_ok=True)
    args.cache = str(cache)
    bundle = data_mod.load(args.data)
    results = {}
    for s in args.seeds:
        fp32 = fp32_model(args, bundle, s, cache)
        for b in args.widths:
            results["sep", b, s] = cached(cache, f"sep_{b}_s{s}",
                                          partial(separate, args, bundle, fp32, b, s))
        for r in args.rows:
            results[r, s] = cached(cache, f"{r}_s{s}",
                                   partial(switchable, args, bundle, fp32, r, s))
    lines = [f"{args.model} on {args.data}, {args.epochs} FP32 + {args.qat_epochs} QAT epochs, "
             f"seeds {' '.join(map(str, args.seeds))}; test Top-1 (%) at the end", "",
             *table(args, results)]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
