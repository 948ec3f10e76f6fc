"""Synthesis and place-and-route of generated units with open tools; the numbers they report.

- Xilinx (the paper's KV260 is a Zynq UltraScale+): ``yosys synth_xilinx -family xcup
  -nodsp`` (LUT resources only, as the paper): LUT, FF, CARRY and memory-bit counts.
- Lattice iCE40: ``yosys synth_ice40`` (LUT4/FF/carry of the unit itself) and
  ``nextpnr-ice40 --hx8k`` on the unit wrapped so that its wide operand ports load from a
  serial shift register (an HX8K has 206 I/Os; the wrapper is the same for both PE kinds):
  placed logic cells and Fmax.
- Switching-activity proxy: the unit's flat iCE40 gate-level netlist simulated on real
  layer vectors; 0/1 transitions of its nets (LUT, carry and flip-flop outputs, ports) per
  MAC, from the VCD. A proxy for dynamic power (unweighted by capacitance), not power.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from potlut.deploy.rtl_pe import RtlError
from potlut.deploy.rtl_sim import require, run_sim

ICE40_CELLS = Path("/usr/share/yosys/ice40/cells_sim.v")


@dataclass
class XilinxStats:
    lut: int
    ff: int
    carry: int
    mem_bits: int
    cells: dict[str, int]


@dataclass
class Ice40Stats:
    lut4: int
    ff: int
    carry: int
    placed_lc: int | None  # None: did not fit / did not route
    fmax_mhz: float | None


def _yosys(script: str, workdir: Path, log: str) -> str:
    proc = subprocess.run([require("yosys"), "-q", "-l", log, "-p", script], capture_output=True,
                          text=True, cwd=workdir)
    if proc.returncode != 0:
        raise RtlError(f"yosys failed: {(proc.stdout + proc.stderr)[-2000:]}")
    return (workdir / log).read_text()


def _cells(stat: str) -> dict[str, int]:
    """Cell counts of the last ``stat`` in a yosys log (``NAME count`` lines)."""
    part = stat[stat.rfind("Number of cells:"):]
    out: dict[str, int] = {}
    for m in re.finditer(r"^\s+(\S+)\s+(\d+)\s*$", part, re.M):
        out[m.group(1)] = int(m.group(2))
    return out


_XMEM_BITS = {"RAM32M": 64 * 4 // 2, "RAM32X1D": 32, "RAM64X1D": 64, "RAM64M": 64 * 3,
              "RAM128X1D": 128, "RAM256X1S": 256, "RAMB18E2": 18 * 1024, "RAMB36E2": 36 * 1024}


def synth_xilinx(src: Path, top: str, workdir: Path) -> XilinxStats:
    """``synth_xilinx -family xcup -nodsp`` of ``top`` (flattened); mapped cell counts."""
    log = _yosys(f"read_verilog {src.name}; proc -norom; synth_xilinx -family xcup -nodsp -flatten "
                 f"-top {top}; stat", workdir, f"{top}.xilinx.log")
    cells = _cells(log)
    lut = sum(v for k, v in cells.items() if re.fullmatch(r"LUT[1-6]", k))
    ff = sum(v for k, v in cells.items() if re.fullmatch(r"FD[A-Z]*", k))
    carry = sum(v for k, v in cells.items() if k.startswith("CARRY"))
    mem = sum(_XMEM_BITS.get(k, 0) * v for k, v in cells.items())
    return XilinxStats(lut, ff, carry, mem, cells)


def wrapper_verilog(top: str, in_bits: int, acc_bits: int) -> str:
    """``top`` behind a serial loader: the ``w``/``a`` operand ports fill from one pin each."""
    return f"""module {top}_io (
  input  wire clk, rst, en, clr, last, sw, sa,
  output wire signed [{acc_bits - 1}:0] acc,
  output wire valid
);
  reg [{in_bits - 1}:0] w, a;
  always @(posedge clk) begin
    w <= {{w[{in_bits - 2 if in_bits > 1 else 0}:0], sw}};
    a <= {{a[{in_bits - 2 if in_bits > 1 else 0}:0], sa}};
  end
  {top} u (.clk(clk), .rst(rst), .en(en), .clr(clr), .last(last), .w(w), .a(a),
           .acc(acc), .valid(valid));
endmodule
"""


def synth_ice40(src: Path, top: str, in_bits: int, acc_bits: int, workdir: Path,
                pnr: bool = True, device: str = "hx8k", package: str = "ct256") -> Ice40Stats:
    """iCE40 synthesis of ``top`` (LUT4/FF/carry) and, with ``pnr``, nextpnr of its wrapper."""
    log = _yosys(f"read_verilog {src.name}; proc -norom; synth_ice40 -flatten -top {top}; stat; "
                 "setattr -mod -unset keep_hierarchy; flatten; "
                 f"write_verilog -noattr {top}.ice40.v", workdir, f"{top}.ice40.log")
    cells = _cells(log)
    lut4 = cells.get("SB_LUT4", 0)
    ff = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
    carry = cells.get("SB_CARRY", 0)
    placed, fmax = None, None
    if pnr:
        wrap = workdir / f"{top}_io.v"
        wrap.write_text(wrapper_verilog(top, in_bits, acc_bits))
        _yosys(f"read_verilog {src.name} {wrap.name}; proc -norom; synth_ice40 -flatten "
               f"-top {top}_io -json {top}_io.json", workdir, f"{top}_io.synth.log")
        pnr_log = workdir / f"{top}_io.pnr.log"
        proc = subprocess.run(
            [require("nextpnr-ice40"), f"--{device}", "--package", package, "--json",
             f"{top}_io.json", "--freq", "12", "--seed", "1", "--log", pnr_log.name, "-q"],
            capture_output=True, text=True, cwd=workdir)
        text = pnr_log.read_text() if pnr_log.exists() else ""
        if proc.returncode == 0:
            lcs = re.findall(r"ICESTORM_LC:\s+(\d+)/", text)
            placed = int(lcs[-1]) if lcs else None
            fm = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", text)
            fmax = float(fm[-1]) if fm else None
    return Ice40Stats(lut4, ff, carry, placed, fmax)


def gate_toggles(workdir: Path, top: str, tb: Path, vcd: Path, timeout: float = 3600) -> None:
    """Simulate the iCE40 netlist ``{top}.ice40.v`` (from :func:`synth_ice40`) under ``tb``."""
    run_sim([tb, workdir / f"{top}.ice40.v", ICE40_CELLS], "tb", workdir, timeout, "2012",
            defines=("NO_ICE40_DEFAULT_ASSIGNMENTS",))
    if not vcd.exists():
        raise RtlError(f"no VCD written at {vcd}")


def as_row(x: XilinxStats | Ice40Stats) -> dict:
    d = asdict(x)
    d.pop("cells", None)
    return d
