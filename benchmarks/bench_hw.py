"""The P-LUT unit against the bit-shift PoT baseline in hardware: one command, one table.

For 3/4/5-bit digits models (trained briefly here, compressed to .potlut), the units of
one real P-LUT layer (features.3: 16 input channels) are generated for both PE kinds —
the single PE and KxK window units, K = 3, 5, 7 — and measured side by side:

- yosys ``synth_xilinx -family xcup -nodsp`` (LUT resources only): LUT, FF, CARRY, memory bits;
- yosys ``synth_ice40`` LUT4/FF, nextpnr-ice40 (HX8K) placed logic cells and Fmax;
- toggle proxy: net-bit toggles per MAC of the iCE40 gate-level netlist simulated on the
  layer's real operands (one digits test image) — a switching-activity proxy, not power;
- weight memory of the layer: S-Huff stream + signs + code lengths + P-LUT entries vs raw
  ``b``-bit (sign + exponent) weights for the shifter.

Usage: ``python benchmarks/bench_hw.py [--bits 3,4,5] [--k 1,3,5,7] [--no-pnr] [--out DIR]``
(K = 1 is the single PE). Prints a Markdown table and the paper's three claims with ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from potlut import data
from potlut.compress import load
from potlut.deploy.rtl_pe import layer_spec, pe_name, pe_verilog
from potlut.deploy.rtl_shuff import coded_layer
from potlut.deploy.rtl_sim import layer_windows, pack_vectors, stream_tb, vcd_toggles
from potlut.deploy.rtl_synth import as_row, gate_toggles, synth_ice40, synth_xilinx
from potlut.deploy.rtl_window import window_name, window_verilog
from potlut.infer.program import lower
from potlut.infer.reference import run_reference
from potlut.nn.export import compress_model
from potlut.pipeline import RunConfig, load_quantized, run

LAYER = "features.3"
PE_OUTPUTS = 16  # outputs of the real layer streamed through the single PE (x 144 MACs)
WINDOW_OUTPUTS = 128  # outputs through a 3x3 unit (x 16 channels x 9 MACs); fewer for larger K


def digits_layer(bits: int, work: Path):
    """A briefly trained ``bits``-bit digits model: (.potlut path, layer, its input codes)."""
    out = work / f"digits{bits}"
    cfg = RunConfig(epochs=2, qat_epochs=2, seed=0, device="cpu", bits=bits)
    run(cfg, out, progress=False)
    bundle = data.load("digits")
    path = out / "m.potlut"
    compress_model(load_quantized(out, cfg), bundle.in_shape, path)
    prog = lower(load(path))
    layer = next(st for st in prog.layers() if st.module == LAYER)
    env = run_reference(prog, bundle.test[0][0][None].numpy(), keep=True)
    return path, layer, np.asarray(env[layer.src])[0]


def weight_bits(path: Path, layer, spec) -> dict[str, int]:
    """Bits of the layer's weights as each unit stores them (tables included)."""
    cl = coded_layer(path, layer.module)
    n = int(layer.w_codes.size)
    plut = cl.nbits + 8 * len(cl.signs) + 8 * cl.n_codes + spec.plut.entries.size * spec.mag_bits
    return {"plut": plut, "shift": n * spec.bits, "shuff_stream": cl.nbits,
            "table": spec.plut.entries.size * spec.mag_bits}


def measure(kind: str, k: int, layer, codes, work: Path, pnr: bool) -> dict:
    """Synthesis, PnR and toggle proxy of one unit on one layer's real operands."""
    C = layer.in_shape[0]
    spec = layer_spec(layer, n_products=k * k * C if k > 1 else layer.k)
    if k == 1:
        name, text = pe_name(spec, kind), pe_verilog(spec, kind)
        w, a = layer_windows(layer, codes)
        w = w[:PE_OUTPUTS].reshape(PE_OUTPUTS, -1, 1)
        a = a[:PE_OUTPUTS].reshape(PE_OUTPUTS, -1, 1)
    else:
        name, text = window_name(spec, kind, k), window_verilog(spec, kind, k)
        w, a = layer_windows(layer, codes, k)
        n = max(16, WINDOW_OUTPUTS * 9 // (k * k))  # about the same MACs for every K
        w, a = w[:n], a[:n]
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    src = d / f"{name}.v"
    src.write_text(text)
    t0 = time.time()
    xs = synth_xilinx(src, name, d)
    ice = synth_ice40(src, name, w.shape[2] * spec.bits, spec.acc_bits, d, pnr=pnr)
    lines = pack_vectors(w, a, spec.bits)
    (d / "vec.hex").write_text("\n".join(lines) + "\n")
    (d / "tb.v").write_text(stream_tb(name, spec, w.shape[2], len(lines), "vec.hex", "g.vcd"))
    gate_toggles(d, name, d / "tb.v", d / "g.vcd")
    macs = int(np.prod(w.shape))
    tog = vcd_toggles(d / "g.vcd")
    (d / "g.vcd").unlink()
    return {"kind": kind, "k": k, "bits": spec.bits, "shift": spec.plut.shift,
            "acc_bits": spec.acc_bits, **{f"x_{a}": b for a, b in as_row(xs).items()},
            **{f"i_{a}": b for a, b in as_row(ice).items()},
            "toggles_per_mac": tog / macs, "macs_simulated": macs,
            "seconds": round(time.time() - t0, 1)}


def ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def table(rows: list[dict], mem: dict[int, dict]) -> str:
    """Markdown: one line per (bits, K), P-LUT | SHIFT | SHIFT/P-LUT for each measure."""
    out = ["| bits | unit | LUT (xcup) P-LUT / SHIFT | FF | CARRY | mem bits | "
           "iCE40 LUT4 P-LUT / SHIFT | placed LC | Fmax MHz | toggles/MAC (proxy) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    by = {(r["bits"], r["k"], r["kind"]): r for r in rows}
    for bits, k in sorted({(r["bits"], r["k"]) for r in rows}):
        p, s = by.get((bits, k, "plut")), by.get((bits, k, "shift"))
        if not (p and s):
            continue
        unit = "PE" if k == 1 else f"{k}x{k} window"

        def pair(key, fmt="{}", p=p, s=s):
            a, b = p[key], s[key]
            fa = "-" if a is None else fmt.format(a)
            fb = "-" if b is None else fmt.format(b)
            return f"{fa} / {fb}"
        out.append(
            f"| {bits} | {unit} | {pair('x_lut')} ({ratio(s['x_lut'], p['x_lut'])}) | "
            f"{pair('x_ff')} | {pair('x_carry')} | {pair('x_mem_bits')} | "
            f"{pair('i_lut4')} ({ratio(s['i_lut4'], p['i_lut4'])}) | {pair('i_placed_lc')} | "
            f"{pair('i_fmax_mhz', '{:.1f}')} | {pair('toggles_per_mac', '{:.1f}')} "
            f"({ratio(s['toggles_per_mac'], p['toggles_per_mac'])}) |")
    out += ["", "| bits | layer weight memory: P-LUT unit (S-Huff + signs + lengths + table) "
            "| SHIFT unit (raw b-bit) | SHIFT / P-LUT |", "|---|---|---|---|"]
    for bits, m in sorted(mem.items()):
        out.append(f"| {bits} | {m['plut']} bits (table {m['table']}) | {m['shift']} bits | "
                   f"{ratio(m['shift'], m['plut'])} |")
    return "\n".join(out)


def claims(rows: list[dict], mem: dict[int, dict]) -> str:
    """The paper's three claims at 4 bits (else the first bit-width measured)."""
    bits = 4 if any(r["bits"] == 4 for r in rows) else rows[0]["bits"]
    by = {(r["k"], r["kind"]): r for r in rows if r["bits"] == bits}
    ks = sorted({k for k, _ in by})
    lut = {k: by[k, "shift"]["x_lut"] / by[k, "plut"]["x_lut"] for k in ks}
    tog = {k: by[k, "shift"]["toggles_per_mac"] / by[k, "plut"]["toggles_per_mac"] for k in ks}
    m = mem[bits]["shift"] / mem[bits]["plut"]

    def verdict(ok: bool) -> str:
        return "reproduced" if ok else "NOT reproduced"
    fmt = ", ".join
    return "\n".join([
        f"Claims at {bits} bits (ratio SHIFT / P-LUT; K=1 is the single PE):",
        f"- 1.45x smaller memory footprint (layer weights): {m:.2f}x -> {verdict(m >= 1.45)}",
        "- >3x power efficiency, toggle PROXY per MAC: "
        + fmt(f"K={k}: {v:.2f}x" for k, v in tog.items())
        + f" -> {verdict(all(v > 3 for v in tog.values()))}",
        "- 2x resource efficiency (xcup LUTs): " + fmt(f"K={k}: {v:.2f}x" for k, v in lut.items())
        + f" -> {verdict(all(v >= 2 for v in lut.values()))}",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", default="3,4,5")
    ap.add_argument("--k", default="1,3,5,7")
    ap.add_argument("--no-pnr", action="store_true", help="skip nextpnr (no placed LC/Fmax)")
    ap.add_argument("--out", type=Path, default=None, help="keep build files and rows.json here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_hw_"))
    work.mkdir(parents=True, exist_ok=True)
    rows, mem = [], {}
    for bits in map(int, args.bits.split(",")):
        path, layer, codes = digits_layer(bits, work)
        mem[bits] = weight_bits(path, layer, layer_spec(layer))
        for k in map(int, args.k.split(",")):
            for kind in ("plut", "shift"):
                r = measure(kind, k, layer, codes, work / f"b{bits}", not args.no_pnr)
                rows.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    (work / "rows.json").write_text(json.dumps({"rows": rows, "memory": mem}, indent=1))
    print(table(rows, mem))
    print()
    print(claims(rows, mem))
    print(f"\n(build files and rows.json in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
