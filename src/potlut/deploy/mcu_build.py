"""Build and run generated C: the host build (gcc, valgrind), and Cortex-M4 firmware
(arm-none-eabi-gcc, a minimal vector table and linker script, QEMU's mps2-an386 board with
semihosting for output). Users run the same flow as the tests.

A test harness (``main.c``) holds a batch of input codes as const data, runs the model
on the first ``n`` of them (host: ``argv[1]``) and prints one line of logits per input
(built with ``-DPOTLUT_COUNT`` for QEMU ``-icount``: the timer ticks of each inference).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from potlut.deploy.c_printer import CModel
from potlut.errors import PotlutError

HOST_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft", "-O2", "-std=c99", "-Wall",
            "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections"]
QEMU = ["-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none"]
MULTIPLY = re.compile(r"^(mul|mla|mls|smul\w*|smla\w*|smlal\w*|umul\w*|umla\w*|umaal)"
                      r"(s|eq|ne|\.w|\.n)*$")


class ToolError(PotlutError):
    """A build tool (compiler, emulator) is missing or failed."""


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolError(f"{name} not found; install it (Debian: gcc-arm-none-eabi, "
                        "libnewlib-arm-none-eabi, qemu-system-arm, valgrind)")
    return path


def _run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **kw)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{Path(cmd[0]).name} ran past {timeout:g} s") from None
    if proc.returncode != 0:
        raise ToolError(f"{Path(cmd[0]).name} failed ({proc.returncode}): "
                        + (proc.stderr or proc.stdout).strip().splitlines()[-1:][0]
                        if (proc.stderr or proc.stdout).strip() else f"{cmd[0]} failed")
    return proc


def write_model(cm: CModel, out: str | Path) -> tuple[Path, Path]:
    """Write ``NAME.h`` and ``NAME.c`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    h, c = out / f"{cm.name}.h", out / f"{cm.name}.c"
    h.write_text(cm.header)
    c.write_text(cm.source)
    return h, c


HARNESS = """/* test harness: run {N}_run on {count} stored inputs, print the logits */
#include <stdint.h>
#include "{N}.h"
#ifdef POTLUT_SEMIHOST
void potlut_out(const char *s);
#else
#include <stdio.h>
#include <stdlib.h>
static void potlut_out(const char *s) {{ fputs(s, stdout); }}
#endif
static const {itype} inputs[{count}][{size}] = {{
{rows}
}};
#ifdef POTLUT_COUNT  /* CMSDK APB timer 0 of mps2-an386 (25 MHz): CTRL, VALUE, RELOAD */
#define TIMER ((volatile uint32_t *)0x40000000u)
#endif
static int32_t logits[{out}];
static int8_t codes[{size}];
static void put_int(int32_t v) {{
    char buf[16];
    int i = 15;
    uint32_t u = v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v;
    buf[i] = 0;
    do {{ buf[--i] = (char)('0' + u % 10u); u /= 10u; }} while (u);
    if (v < 0) buf[--i] = '-';
    potlut_out(buf + i);
}}
int main(int argc, char **argv) {{
    int n = {count}, i, j;
#ifndef POTLUT_SEMIHOST
    if (argc > 1) n = atoi(argv[1]);
#else
    (void)argc; (void)argv;
#endif
    for (i = 0; i < n; i++) {{
#ifdef POTLUT_COUNT  /* print the timer ticks the inference took, not the logits */
        uint32_t t0;
        TIMER[2] = 0xFFFFFFFFu; TIMER[1] = 0xFFFFFFFFu; TIMER[0] = 1u;
        t0 = TIMER[1];
        {run}
        put_int((int32_t)(t0 - TIMER[1]));
        potlut_out("\\n");
        continue;
#endif
        {run}
        for (j = 0; j < {out}; j++) {{
            put_int(logits[j]);
            potlut_out(j + 1 < {out} ? " " : "\\n");
        }}
    }}
    return 0;
}}
"""


def write_harness(cm: CModel, codes: np.ndarray, out: str | Path, pixels: bool = False) -> Path:
    """``main.c`` holding ``codes`` (``[N, in_size]`` int8) for ``cm``'s model; with
    ``pixels`` they are uint8 pixels that go through ``NAME_quantize_input`` first."""
    codes = np.asarray(codes).reshape(len(codes), -1).astype(np.int64)
    if not pixels:
        codes = (codes + 128) % 256 - 128  # the int8 bytes (sign-magnitude codes >= 128)
    run = (f"{cm.name}_quantize_input(inputs[i], codes); {cm.name}_run(codes, logits);"
           if pixels else f"{cm.name}_run(inputs[i], logits); (void)codes;")
    rows = ",\n".join("  {" + ",".join(str(int(v)) for v in r) + "}" for r in codes)
    path = Path(out) / "main.c"
    path.write_text(HARNESS.format(N=cm.name, count=len(codes), size=cm.in_size,
                                   out=cm.out_size, rows=rows, run=run,
                                   itype="uint8_t" if pixels else "int8_t"))
    return path


def parse_logits(text: str, out_size: int) -> np.ndarray:
    rows = [list(map(int, ln.split())) for ln in text.strip().splitlines() if ln.strip()]
    arr = np.array(rows, dtype=np.int64).reshape(-1, out_size)
    return arr.astype(np.int32)


def build_host(cm: CModel, out: str | Path, extra: list[str] | None = None) -> Path:
    """Host executable of model + harness, built with the strict C99 flags."""
    out = Path(out)
    exe = out / f"{cm.name}_host"
    _run([tool(os.environ.get("CC", "gcc")), *HOST_FLAGS, *(extra or []), "-o", str(exe),
          str(out / "main.c"), str(out / f"{cm.name}.c")])
    return exe


def run_host(exe: Path, out_size: int, n: int | None = None,
             wrapper: list[str] | None = None, timeout: float = 600) -> np.ndarray:
    """Logits printed by the host executable on its first ``n`` inputs."""
    cmd = [*(wrapper or []), str(exe)] + ([str(n)] if n is not None else [])
    return parse_logits(_run(cmd, timeout).stdout, out_size)


def memcheck_errors(exe: Path, n: int = 1) -> int:
    """Errors valgrind memcheck reports on ``n`` inferences of the host build."""
    proc = subprocess.run([tool("valgrind"), "--tool=memcheck", "--error-exitcode=0",
                           "--leak-check=no", str(exe), str(n)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=900)
    m = re.search(r"ERROR SUMMARY: (\d+) errors", proc.stderr)
    if m is None:
        raise ToolError("valgrind printed no error summary: " + proc.stderr[-300:])
    return int(m.group(1))


def callgrind_instructions(exe: Path, function: str, n: int = 1) -> int:
    """Host instructions executed inside ``function`` (inclusive) on ``n`` inferences."""
    outf = exe.parent / f"callgrind.{exe.name}.out"
    _run([tool("valgrind"), "--tool=callgrind", f"--toggle-collect={function}",
          f"--callgrind-out-file={outf}", str(exe), str(n)], timeout=1800)
    text = outf.read_text()
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if m is None:
        raise ToolError("callgrind wrote no totals")
    return int(m.group(1))


STARTUP = """/* minimal Cortex-M startup: vector table, .data/.bss setup, semihosting output/exit */
#include <stdint.h>
extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
int main(int argc, char **argv);

static void semihost(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}
void potlut_out(const char *s) { semihost(0x04u, s); }             /* SYS_WRITE0 */
static void potlut_exit(int ok) { semihost(0x18u, (const void *)(ok ? 0x20026u : 0x20023u)); }

void Reset_Handler(void) {
    uint32_t *s = &_sidata, *d = &_sdata;
    while (d < &_edata) *d++ = *s++;
    for (d = &_sbss; d < &_ebss;) *d++ = 0;
    potlut_exit(main(0, 0) == 0);
    for (;;) {}
}
static void Fault_Handler(void) { potlut_out("fault\\n"); potlut_exit(0); for (;;) {} }

__attribute__((section(".isr_vector"), used))
static void (*const vectors[16])(void) = {
    (void (*)(void))&_estack, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0,
    Fault_Handler, Fault_Handler,
};
"""

LINKER = """/* mps2-an386 (Cortex-M4): code and const data in SSRAM1 at 0, RAM at 0x20000000 */
MEMORY {
  FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M
  RAM (rwx)  : ORIGIN = 0x20000000, LENGTH = 2M
}
ENTRY(Reset_Handler)
SECTIONS {
  .text : { KEEP(*(.isr_vector)) *(.text*) *(.rodata*) . = ALIGN(4); } > FLASH
  .ARM.exidx : { *(.ARM.exidx*) } > FLASH
  _sidata = LOADADDR(.data);
  .data : { _sdata = .; *(.data*) . = ALIGN(4); _edata = .; } > RAM AT > FLASH
  .bss (NOLOAD) : { _sbss = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; } > RAM
  _estack = ORIGIN(RAM) + LENGTH(RAM);
}
"""


def m4_commands(name: str, defines: tuple[str, ...] = ()) -> list[list[str]]:
    """The two arm-none-eabi-gcc lines (run in the model's folder) that build ``NAME.elf``:
    the model object (with ``NAME.su`` stack usage), then model + harness + startup."""
    return [["arm-none-eabi-gcc", *M4_FLAGS, "-pedantic", "-fstack-usage", "-c",
             "-o", f"{name}.m4.o", f"{name}.c"],
            ["arm-none-eabi-gcc", *M4_FLAGS, "-DPOTLUT_SEMIHOST", *(f"-D{d}" for d in defines),
             "-nostartfiles", "-T", "link.ld",
             "-Wl,--gc-sections", "-o", f"{name}.elf", f"{name}.m4.o", "main.c", "startup.c",
             "-lc", "-lgcc"]]


def qemu_command(name: str, icount: bool = False) -> list[str]:
    """qemu-system-arm line (run in the model's folder) that runs ``NAME.elf`` on mps2-an386,
    the firmware's semihosting output going to ``NAME.qemu.txt``; with ``icount`` virtual
    time advances 1 ns per executed instruction (``-icount shift=0``)."""
    return ["qemu-system-arm", *QEMU, *(["-icount", "shift=0"] if icount else []),
            "-chardev", f"file,id=sh,path={name}.qemu.txt",
            "-semihosting-config", "enable=on,target=native,chardev=sh", "-kernel", f"{name}.elf"]


def _run_in(out: Path, cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return _run([tool(cmd[0]), *cmd[1:]], timeout, cwd=out)


def compile_m4_object(cm: CModel, out: str | Path) -> Path:
    """``NAME.m4.o`` for Cortex-M4 (with ``NAME.su`` stack usage beside it)."""
    out = Path(out)
    _run_in(out, m4_commands(cm.name)[0])
    return out / f"{cm.name}.m4.o"


def write_startup(out: str | Path) -> None:
    """``startup.c`` (vector table, semihosting) and ``link.ld`` for mps2-an386."""
    (Path(out) / "startup.c").write_text(STARTUP)
    (Path(out) / "link.ld").write_text(LINKER)


def build_m4(cm: CModel | str, out: str | Path, defines: tuple[str, ...] = ()) -> Path:
    """Firmware ELF (model + harness + startup) for QEMU's mps2-an386 (Cortex-M4)."""
    out = Path(out)
    name = cm if isinstance(cm, str) else cm.name
    write_startup(out)
    for cmd in m4_commands(name, defines):
        _run_in(out, cmd)
    return out / f"{name}.elf"


def run_qemu(elf: Path, out_size: int, timeout: float = 600, icount: bool = False) -> np.ndarray:
    """Logits (or with ``icount`` and a POTLUT_COUNT harness, ticks: ``out_size`` 1) the
    firmware prints under qemu-system-arm (semihosting)."""
    elf = Path(elf)
    log = elf.with_suffix(".qemu.txt")
    log.unlink(missing_ok=True)
    _run_in(elf.parent, qemu_command(elf.stem, icount), timeout)
    text = log.read_text()
    if "fault" in text:
        raise ToolError(f"{elf.name}: the firmware faulted under QEMU")
    return parse_logits(text, out_size)


TIMER_HZ = 25_000_000  # mps2-an386 SYSCLK, the CMSDK timer's clock


def m4_instructions(cm: CModel, out: str | Path, timeout: float = 600) -> int:
    """Cortex-M4 instructions of one ``NAME_run`` (the harness's first stored input), counted
    by QEMU: under ``-icount shift=0`` each instruction is 1 ns of virtual time, read from
    the 25 MHz CMSDK timer around the call (40 instructions a tick, so +-40)."""
    elf = build_m4(cm, out, ("POTLUT_COUNT",))
    ticks = int(run_qemu(elf, 1, timeout, icount=True)[0, 0])
    return ticks * (1_000_000_000 // TIMER_HZ)


@dataclass
class M4Size:
    """Bytes of the model object for Cortex-M4: flash = text + rodata, RAM = data + bss + stack."""

    text: int
    rodata: int
    data: int
    bss: int
    stack: int

    @property
    def flash(self) -> int:
        return self.text + self.rodata + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss + self.stack


def m4_size(obj: Path) -> M4Size:
    """Section sizes (arm-none-eabi-size -A) and worst stack depth (-fstack-usage)."""
    obj = Path(obj)
    text = _run([tool("arm-none-eabi-size"), "-A", str(obj)]).stdout
    sizes = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for ln in text.splitlines():
        parts = ln.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            kind = parts[0].split(".")[1]
            if kind in sizes:
                sizes[kind] += int(parts[1])
    return M4Size(**sizes, stack=stack_bytes(obj.with_suffix(".su")))


def stack_bytes(su: Path) -> int:
    """Worst stack of ``NAME_run``: its frame plus the largest callee frame plus a helper's.

    The generated call graph is two deep (run -> layer -> runtime helper), so this sum
    bounds every path.
    """
    frames = {}
    for ln in su.read_text().splitlines():
        fields = ln.split("\t")
        if len(fields) >= 2:
            frames[fields[0].rsplit(":", 1)[-1]] = int(fields[1])
    run = max((v for k, v in frames.items() if k.endswith("_run")), default=0)
    helpers = [v for k, v in frames.items() if k.startswith("potlut_")]
    others = [v for k, v in frames.items() if not k.startswith("potlut_")
              and not k.endswith("_run")]
    return run + max(others, default=0) + max(helpers, default=0)


def disassembly(obj: Path) -> dict[str, list[str]]:
    """Mnemonics of every function in ``obj`` (arm-none-eabi-objdump -d)."""
    obj = Path(obj)
    text = _run([tool("arm-none-eabi-objdump"), "-d", "--no-show-raw-insn", str(obj)]).stdout
    funcs: dict[str, list[str]] = {}
    cur = None
    for ln in text.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:$", ln)
        if m:
            cur = funcs.setdefault(m.group(1).split(".")[0], [])  # f.constprop.0 -> f
            continue
        m = re.match(r"^\s+[0-9a-f]+:\s+(\S+)", ln)
        if m and cur is not None:
            cur.append(m.group(1))
    return funcs


def multiplies(mnemonics: list[str]) -> list[str]:
    """The multiply instructions among ``mnemonics``."""
    return [m for m in mnemonics if MULTIPLY.match(m)]
