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
from potlut.errors import PotlutConfigError
from potlut.infer.program import lower


def digits_normalization() -> Normalization:
    """The digits bundle's standardization (pixels 0..16 / 16, training mean and std)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from potlut.data.digits import SPLIT_SEED, TEST_FRACTION

    d = load_digits()
    x = d.images.astype(np.float32)[:, None] / 16.0
    xtr, _ = train_test_split(x, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                              stratify=d.target)
    t = torch.from_numpy(xtr)
    mean = t.mean((0, 2, 3)).tolist()
    std = t.std((0, 2, 3)).clamp_min(1e-6).tolist()
    return Normalization(16.0, tuple(mean), tuple(std))


def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split as uint8 pixels ``[N, 1, 8, 8]`` (0..16) and labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from potlut.data.digits import SPLIT_SEED, TEST_FRACTION

    d = load_digits()
    _, xte, _, yte = train_test_split(d.images.astype(np.uint8)[:, None], d.target,
                                      test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                      stratify=d.target)
    return xte, yte


def normalization(spec: str, channels: int) -> Normalization:
    """``digits``, a data set ``KIND:DIR`` (its loader's statistics) or
    ``SCALE:MEAN,..:STD,..`` as a :class:`Normalization`."""
    if spec == "digits":
        norm = digits_normalization()
    elif not spec.partition(":")[0].replace(".", "", 1).isdigit():  # a data set, not SCALE
        from potlut.deploy.firmware import test_images

        norm = test_images(spec, channels)[2]
    else:
        try:
            scale, mean, std = spec.split(":")
            norm = Normalization(float(scale), tuple(float(v) for v in mean.split(",")),
                                 tuple(float(v) for v in std.split(",")))
        except ValueError:
            raise PotlutConfigError(f"--data {spec!r}: use digits, KIND:DIR or "
                                    "SCALE:MEAN,..:STD,.. (e.g. 255:0.49,0.48,0.45:0.25,0.24,"
                                    "0.26)") from None
    if len(norm.mean) != channels or len(norm.std) != channels:
        raise PotlutConfigError(f"--data {spec!r} gives {len(norm.mean)} channels, the model "
                                f"has {channels}")
    if norm.scale <= 0 or any(s <= 0 for s in norm.std):
        raise PotlutConfigError(f"--data {spec!r}: scale and std must be positive")
    return norm


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
