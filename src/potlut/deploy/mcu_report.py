"""The microcontroller report: flash, RAM and instructions per inference of a model's
generated C (packed and S-Huff weights) against its int8 baseline, measured side by side.

Flash = .text + .rodata + .data and RAM = .data + .bss + worst stack (-fstack-usage) of
the model object compiled for Cortex-M4 (``arm-none-eabi-size -A``); instructions are
counted on the Cortex-M4 by QEMU (``-icount shift=0`` and the board timer) and, for
comparison, by valgrind's callgrind on the x86-64 host build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from potlut.compress.bounds import layer_bound_bytes
from potlut.compress.graph import ModelGraph
from potlut.deploy.c_printer import Normalization, print_c
from potlut.deploy.mcu_build import (
    build_host,
    callgrind_instructions,
    compile_m4_object,
    m4_instructions,
    m4_size,
    write_harness,
    write_model,
)
from potlut.deploy.mcu_int8 import int8_graph
from potlut.infer.program import lower


def measure(source: str | Path | ModelGraph, norm: Normalization, out: str | Path,
            callgrind: bool = True, m4: bool = True) -> dict:
    """Rows for P-LUT packed, P-LUT S-Huff and the int8 baseline of one model."""
    from potlut.compress import load

    graph = source if isinstance(source, ModelGraph) else load(source)
    variants = [("plut-packed", graph, "packed"), ("plut-shuff", graph, "shuff"),
                ("int8-baseline", int8_graph(graph), "packed")]
    rows = []
    for tag, g, w in variants:
        prog = lower(g)
        cm = print_c(prog, "net", w, norm)
        d = Path(out) / tag
        write_model(cm, d)
        size = m4_size(compile_m4_object(cm, d))
        row = {"variant": tag, "flash": size.flash, "text": size.text, "rodata": size.rodata,
               "ram": size.ram, "arena": cm.arena_bytes, "stack": size.stack,
               "weight_bytes": cm.weight_bytes}
        if w == "shuff":  # what an ideal order-0 coder of each layer's codes would take
            row["weight_bound_bytes"] = round(sum(
                layer_bound_bytes(st.w_codes, st.w_codes != 0) for st in prog.layers()))
        write_harness(cm, np.zeros((1, cm.in_size), np.int8), d)
        if m4:
            row["m4_instructions"] = m4_instructions(cm, d)
        if callgrind:
            row["host_instructions"] = callgrind_instructions(build_host(cm, d), "net_run", 1)
        rows.append(row)
    base = rows[-1]
    for r in rows:
        r["flash_x_int8"] = round(r["flash"] / base["flash"], 3)
        if "weight_bound_bytes" in r:  # the flash ratio if S-Huff reached that bound
            r["bound_flash_x_int8"] = round(
                (r["flash"] - r["weight_bytes"] + r["weight_bound_bytes"]) / base["flash"], 3)
        r["ram_x_int8"] = round(r["ram"] / base["ram"], 3)
        if m4:
            r["m4_x_int8"] = round(r["m4_instructions"] / base["m4_instructions"], 3)
        if callgrind:
            r["instr_x_int8"] = round(r["host_instructions"] / base["host_instructions"], 3)
    return {"rows": rows}
