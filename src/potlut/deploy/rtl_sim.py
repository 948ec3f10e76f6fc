"""Testbenches and vectors for the generated Verilog, run with Icarus Verilog (iverilog/vvp).

Vectors come from the integer program (codes the Python engine computed); the testbench
prints every finished accumulator, and :func:`run_sim` returns them as integers for the
caller to compare with the engine's. A VCD of the run gives the switching-activity proxy
(:func:`vcd_toggles`): toggled net bits, not power — open tools have no FPGA power model.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from potlut.deploy.rtl_pe import PeSpec, RtlError


def require(tool: str) -> str:
    """Path of an external tool, or a one-line error naming the package to install."""
    path = shutil.which(tool)
    if path is None:
        pkg = {"iverilog": "iverilog", "vvp": "iverilog", "yosys": "yosys",
               "nextpnr-ice40": "nextpnr-ice40"}.get(tool, tool)
        raise RtlError(f"{tool} not found on PATH; install it (Debian package {pkg})")
    return path


def run_sim(sources: list[Path], top: str, workdir: Path, timeout: float = 600,
            std: str = "2005", defines: tuple[str, ...] = ()) -> list[str]:
    """Compile ``sources`` with iverilog (Verilog-``std``, top ``top``) and run; stdout lines.

    Generated code is Verilog-2005; vendor cell libraries may need ``std="2012"``.
    """
    exe = workdir / f"{top}.vvp"
    cmd = [require("iverilog"), f"-g{std}", *(f"-D{d}" for d in defines), "-s", top, "-o",
           str(exe),
           *map(str, sources)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if proc.returncode != 0:
        raise RtlError(f"iverilog failed: {proc.stderr.strip()[-2000:]}")
    proc = subprocess.run([require("vvp"), "-n", str(exe)], capture_output=True, text=True,
                          cwd=workdir, timeout=timeout)
    if proc.returncode != 0 or "ERROR" in proc.stdout:
        raise RtlError(f"simulation of {top} failed: {(proc.stdout + proc.stderr)[-2000:]}")
    return proc.stdout.splitlines()


def ints(lines: list[str], tag: str) -> np.ndarray:
    """The integers of the lines that start with ``tag`` (int64)."""
    return np.array([int(ln.split()[1]) for ln in lines if ln.startswith(tag + " ")],
                    dtype=np.int64)


def pack_vectors(w: np.ndarray, a: np.ndarray, bits: int) -> list[str]:
    """Hex lines ``{en, clr, last, w_vec, a_vec}``: one per cycle, outputs in order.

    ``w``/``a`` are signed codes ``[outputs, steps, taps]``; step 0 of an output clears its
    accumulator, its last step marks it finished.
    """
    w = np.asarray(w, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    n_out, steps, taps = w.shape
    vw = taps * bits
    shifts = [t * bits for t in range(taps)]
    digits = (3 + 2 * vw + 3) // 4
    out = []
    for o in range(n_out):
        for s in range(steps):
            wv = sum(int(w[o, s, t]) << shifts[t] for t in range(taps))
            av = sum(int(a[o, s, t]) << shifts[t] for t in range(taps))
            ctl = 4 | (2 if s == 0 else 0) | (1 if s == steps - 1 else 0)
            out.append(f"{(ctl << (2 * vw)) | (wv << vw) | av:0{digits}x}")
    return out


def stream_tb(dut: str, spec: PeSpec, taps: int, n_lines: int, vec_file: str,
              vcd: str | None = None) -> str:
    """Testbench: feed one vector line per cycle into ``dut``, print ``ACC <value>``."""
    vw = taps * spec.bits
    width = 3 + 2 * vw
    # depth 1: the nets of the unit itself (on a flat gate-level netlist: every mapped net,
    # not the internals of the cell models)
    dump = (f'    $dumpfile("{vcd}");\n    $dumpvars(1, dut);\n') if vcd else ""
    return f"""`timescale 1ns/1ps
module tb;
  reg clk = 1'b0, rst = 1'b1, en = 1'b0, clr = 1'b0, last = 1'b0;
  reg [{vw - 1}:0] w = 0, a = 0;
  wire signed [{spec.acc_bits - 1}:0] acc;
  wire valid;
  reg [{width - 1}:0] vec [0:{n_lines - 1}];
  integer i;
  {dut} dut (.clk(clk), .rst(rst), .en(en), .clr(clr), .last(last), .w(w), .a(a),
             .acc(acc), .valid(valid));
  always #5 clk = ~clk;
  always @(posedge clk) if (valid) $display("ACC %0d", acc);
  initial begin
    $readmemh("{vec_file}", vec);
{dump}    @(posedge clk); #1 rst = 1'b0;
    for (i = 0; i < {n_lines}; i = i + 1) begin
      {{en, clr, last, w, a}} = vec[i];
      @(posedge clk); #1;
    end
    en = 1'b0; last = 1'b0;
    repeat (4) @(posedge clk);
    $finish;
  end
endmodule
"""


def simulate_stream(verilog: str, dut: str, spec: PeSpec, w: np.ndarray, a: np.ndarray,
                    workdir: Path, vcd: bool = False) -> np.ndarray:
    """Run ``dut`` (a PE or window unit) on ``[outputs, steps, taps]`` codes; its accumulators."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines = pack_vectors(w, a, spec.bits)
    (workdir / f"{dut}.hex").write_text("\n".join(lines) + "\n")
    (workdir / f"{dut}.v").write_text(verilog)
    tb = stream_tb(dut, spec, w.shape[2], len(lines), f"{dut}.hex",
                   f"{dut}.vcd" if vcd else None)
    (workdir / f"tb_{dut}.v").write_text(tb)
    out = ints(run_sim([workdir / f"tb_{dut}.v", workdir / f"{dut}.v"], "tb", workdir), "ACC")
    if out.size != w.shape[0]:
        raise RtlError(f"{dut}: {out.size} accumulators out, {w.shape[0]} expected")
    return out


def expected_stream(spec: PeSpec, w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The engine's accumulators for the same vectors: sums of its signed table rows."""
    rows = spec.plut.signed_rows(a_signed=True).astype(np.int64)
    return rows[np.asarray(w, np.int64), np.asarray(a, np.int64)].sum(axis=(1, 2))


def vcd_toggles(path: Path, scope: str = "dut") -> int:
    """Bit toggles of every net under ``scope`` in a VCD (after time 0), the clock excluded."""
    ids: dict[str, int] = {}  # id -> width, for nets inside the scope
    stack: list[str] = []
    last: dict[str, str] = {}
    toggles = 0
    started = False
    with open(path) as f:
        for line in f:
            tok = line.split()
            if not tok:
                continue
            if not started:
                if tok[0] == "$scope":
                    stack.append(tok[2])
                elif tok[0] == "$upscope":
                    stack.pop()
                elif tok[0] == "$var" and scope in stack and tok[4] != "clk":
                    ids[tok[3]] = int(tok[2])
                elif tok[0] == "$enddefinitions":
                    started = True
                continue
            c = tok[0][0]
            if c == "#":
                continue
            if c in "01xzXZ" and len(tok) == 1:
                ident, val = tok[0][1:], tok[0][0]
            elif c in "bB" and len(tok) == 2:
                ident, val = tok[1], tok[0][1:]
            else:
                continue
            if ident not in ids:
                continue
            width = ids[ident]
            val = val.rjust(width, "0" if val[0] in "01" else val[0])[-width:]
            prev = last.get(ident)
            if prev is not None:
                toggles += sum(1 for x, y in zip(prev, val, strict=True) if x != y and x in "01"
                               and y in "01")
            last[ident] = val
    return toggles


def layer_windows(layer, codes: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Operands of a conv layer for one image, as window-unit vectors ``[O*OH*OW, C, K*K]``.

    ``codes`` is the layer's input ``[C, H, W]`` (signed codes, zero padded here). With
    ``k`` other than the layer's kernel, the windows are ``k x k`` around the same centres
    and the layer's weights are tiled over the taps (real data for a unit of another size).
    """
    codes = np.asarray(codes, dtype=np.int64)
    C, H, W = codes.shape
    kk = layer.kernel[0]
    k = k or kk
    s, p = layer.stride[0], layer.padding[0] + (k - kk) // 2
    OH, OW = layer.out_shape[1], layer.out_shape[2]
    pad = np.zeros((C, H + 2 * p + k, W + 2 * p + k), np.int64)
    pad[:, p:p + H, p:p + W] = codes
    a = np.stack([pad[:, i:i + s * (OH - 1) + 1:s, j:j + s * (OW - 1) + 1:s]
                  for i in range(k) for j in range(k)], axis=-1)  # [C, OH, OW, k*k]
    a = a.transpose(1, 2, 0, 3).reshape(OH * OW, C, k * k)
    sw = layer.signed_weight_codes().astype(np.int64).reshape(layer.out_channels, C, kk * kk)
    if k != kk:
        sw = np.resize(sw, (layer.out_channels, C, k * k))
    n = layer.out_channels * OH * OW
    w = np.repeat(sw, OH * OW, axis=0)
    return w.reshape(n, C, k * k), np.tile(a, (layer.out_channels, 1, 1))
