"""Microcontroller report: flash, RAM and instructions per inference of the generated C
(P-LUT with packed or S-Huff weights) against the int8 baseline of the same network,
measured side by side in one run.

Flash/RAM: the model object for Cortex-M4 (arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -O2,
arm-none-eabi-size -A, -fstack-usage). Instructions of one inference on the Cortex-M4:
QEMU mps2-an386 with -icount shift=0 (1 ns of virtual time per instruction) read from the
board's 25 MHz timer around NAME_run (+-40); beside them valgrind callgrind on the x86-64
host build.
Models, trained here once and cached under runs/bench_mcu/ (re-runs only measure): the
digits CNN (`potlut run --bits B --epochs 4 --qat-epochs 4`) and ResNet20 on the real
CIFAR-10 sample (`potlut run --data cifar10:DIR --model resnet20 --bits B --epochs 8
--qat-epochs 8`, a few minutes an epoch on one core), at 3 and 4 bits; or the ResNet20
files given with --model-file (bit-width read from the file).

    python benchmarks/bench_mcu.py [--cifar DIR] [--model-file F.potlut]... [--out DIR]
                                   [--no-callgrind] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from potlut.compress import load
from potlut.deploy.mcu_report import measure
from potlut.firmware_data import digits_normalization, test_images
from potlut.infer import lower

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "runs" / "bench_mcu"
CIFAR_CANDIDATES = [ROOT.parent / "shared/data/cifar10-sample",  # a clone beside shared/
                    ROOT.parents[1] / "shared/data/cifar10-sample"]  # a worktree in wt/


def potlut_run(out: Path, *args: str) -> Path:
    """``potlut run ... --out out`` unless ``out/model.potlut`` is cached; the file."""
    if not (out / "model.potlut").exists():
        print(f"training {out.name}: potlut run {' '.join(args)}", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, "-m", "potlut", "run", *args, "--device", "cpu",
                               "--out", str(out)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            sys.exit(f"bench_mcu: potlut run failed: {proc.stderr.strip()[-500:]}")
    return out / "model.potlut"


def cifar_spec(folder: Path | None) -> str:
    for d in [folder] if folder else CIFAR_CANDIDATES:
        if d is not None and d.is_dir():
            sub = d / "cifar-10-batches-py"
            return f"cifar10:{sub if sub.is_dir() else d}"
    sys.exit("bench_mcu: no CIFAR-10 folder; pass --cifar DIR (e.g. ../shared/data/cifar10-sample)")


def file_bits(path: Path) -> int:
    """The low-bit width of a .potlut file (its P-LUT layers' weight bits)."""
    return max(s.bits_w for s in lower(load(path)).layers() if s.mode == "plut")


def top1(path: Path) -> float | None:
    """Integer-engine Top-1 that `potlut run` recorded beside the file, if any."""
    rep = path.parent / "report.json"
    return json.loads(rep.read_text()).get("int_top1") if rep.is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar", type=Path, default=None, help="CIFAR-10 (sample) folder")
    ap.add_argument("--model-file", type=Path, action="append", default=[],
                    help="a trained ResNet20 .potlut to measure instead of training one")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_mcu_"))
    spec = cifar_spec(args.cifar)
    resnets = {file_bits(f): f for f in args.model_file}
    for bits in (3, 4):
        resnets.setdefault(bits, potlut_run(
            CACHE / f"resnet20-cifar{bits}", "--data", spec, "--model", "resnet20", "--bits",
            str(bits), "--epochs", "8", "--qat-epochs", "8"))
    rgb = test_images(spec, 3)[2]  # the CIFAR loader's normalization, folded into the C
    results = []
    for bits in (3, 4):
        digits = potlut_run(CACHE / f"digits{bits}", "--bits", str(bits), "--epochs", "4",
                            "--qat-epochs", "4")
        for model, path, norm in [("digits CNN", digits, digits_normalization()),
                                  ("ResNet20", resnets[bits], rgb)]:
            rep = measure(path, norm, out / f"{model.split()[0]}{bits}",
                          callgrind=not args.no_callgrind)
            acc = top1(path)
            for r in rep["rows"]:
                results.append({"model": model, "bits": bits, "file": str(path),
                                "int_top1": acc, **r})
                if not args.json:
                    host = (f"  host {r['host_instructions']:>13,} ({r['instr_x_int8']:.3f}x)"
                            if "host_instructions" in r else "")
                    print(f"{model:10} {bits}-bit (Top-1 {acc}) {r['variant']:13} flash "
                          f"{r['flash']:>9,} B ({r['flash_x_int8']:.3f}x)  RAM {r['ram']:>8,} B "
                          f"({r['ram_x_int8']:.3f}x)  weights {r['weight_bytes']:>8,} B  M4 "
                          f"instr {r['m4_instructions']:>12,} ({r['m4_x_int8']:.3f}x){host}"
                          + (f"  entropy bound {r['weight_bound_bytes']:,} B (flash "
                             f"{r['bound_flash_x_int8']:.3f}x)" if "weight_bound_bytes" in r
                             else ""), flush=True)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
