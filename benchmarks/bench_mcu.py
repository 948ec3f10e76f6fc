"""Microcontroller report: flash, RAM and instructions per inference of the generated C
(P-LUT with packed or S-Huff weights) against the int8 baseline of the same network,
measured side by side in one run.

Flash/RAM: the model object for Cortex-M4 (arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -O2,
arm-none-eabi-size -A, -fstack-usage). Instructions: valgrind callgrind on the host build
(x86-64; the packaged QEMU ships no instruction-counting plugin), one inference.
Models: the digits CNN (a trained `potlut run` file) and ResNet20 (converted + calibrated
on random images: no CIFAR-10 here), at 3 and 4 bits.

    python benchmarks/bench_mcu.py [--out DIR] [--no-callgrind] [--json]
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

from potlut import models
from potlut.compress import export_graph, load
from potlut.deploy.c_printer import Normalization
from potlut.deploy.mcu_report import digits_normalization, measure
from potlut.nn import QuantSpec, calibrate, convert


def resnet20_graph(bits: int):
    torch.manual_seed(0)
    q = convert(models.build("resnet20", 10, 3), QuantSpec(bits=bits))
    calibrate(q, torch.randn(32, 3, 32, 32))
    torch.set_num_threads(1)
    return export_graph(q.eval(), (3, 32, 32))


def digits_file(bits: int, out: Path) -> Path:
    run = out / f"digits{bits}"
    if not (run / "model.potlut").exists():
        subprocess.run([sys.executable, "-m", "potlut", "run", "--bits", str(bits), "--out",
                        str(run)], check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    return run / "model.potlut"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_mcu_"))
    rgb = Normalization(255.0, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    results = []
    for bits in (3, 4):
        for model, src, norm in [("digits CNN", lambda b=bits: load(digits_file(b, out)),
                                  digits_normalization()),
                                 ("ResNet20", lambda b=bits: resnet20_graph(b), rgb)]:
            rep = measure(src(), norm, out / f"{model.split()[0]}{bits}",
                          callgrind=not args.no_callgrind)
            for r in rep["rows"]:
                results.append({"model": model, "bits": bits, **r})
                if not args.json:
                    ins = (f"{r['host_instructions']:>13,} ({r['instr_x_int8']:.3f}x)"
                           if "host_instructions" in r else "")
                    print(f"{model:10} {bits}-bit {r['variant']:13} flash {r['flash']:>9,} B "
                          f"({r['flash_x_int8']:.3f}x)  RAM {r['ram']:>8,} B "
                          f"({r['ram_x_int8']:.3f}x)  instr {ins}", flush=True)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
