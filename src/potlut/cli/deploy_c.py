"""``potlut export-c``: a .potlut file as C99 for a microcontroller (``NAME.h``, ``NAME.c``,
with ``--firmware m4`` a QEMU Cortex-M4 project); ``potlut mcu-run``: build and run that
project under qemu-system-arm and compare its predictions with the Python engine's."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from potlut.cli.app import app, user_errors
from potlut.errors import PotlutConfigError


@app.command("export-c")
@user_errors
def export_c_cmd(
    file: Path = typer.Argument(..., help=".potlut model file"),
    out: Path = typer.Option(..., "-o", "--out", help="folder to write NAME.h and NAME.c"),
    name: str = typer.Option("model", "--name", help="C prefix and file name"),
    weights: str = typer.Option("packed", "--weights", help="packed (b bits a weight) or shuff "
                                "(S-Huff, decoded at run time)"),
    int8_baseline: bool = typer.Option(False, "--int8-baseline",
                                       help="emit the uniform int8 baseline of the same network"),
    data: str = typer.Option("digits", "--data", help="pixel normalization folded into "
                             "NAME_quantize_input: digits, a data set KIND:DIR (e.g. "
                             "cifar10:DIR), or SCALE:MEAN,..:STD,.. "
                             "(x = (p / SCALE - MEAN) / STD)"),
    firmware: str = typer.Option(None, "--firmware", help="m4: also write a firmware project "
                                 "for QEMU's mps2-an386 (Cortex-M4): main.c with the first "
                                 "--images test images of --data, startup.c, link.ld, Makefile; "
                                 "run it with potlut mcu-run DIR"),
    images: int = typer.Option(64, "--images", help="test images in the firmware harness"),
    report: bool = typer.Option(False, "--report", help="also build for Cortex-M4 and print "
                                "flash, RAM and instructions (QEMU -icount, host callgrind) "
                                "against the int8 baseline"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Generate C99 (no malloc, no floating point) from the file's integer program."""
    from potlut.compress import load
    from potlut.deploy.c_printer import WEIGHT_FORMATS, c_ident, print_c
    from potlut.deploy.mcu_int8 import int8_graph
    from potlut.firmware_data import normalization
    from potlut.infer.program import lower

    if weights not in WEIGHT_FORMATS:
        raise PotlutConfigError(f"--weights must be packed or shuff, got {weights!r}")
    if c_ident(name) != name:
        raise PotlutConfigError(f"--name {name!r} is not a C identifier")
    if firmware not in (None, "m4"):
        raise PotlutConfigError(f"--firmware must be m4 (QEMU mps2-an386), got {firmware!r}")
    if images < 1:
        raise PotlutConfigError(f"--images must be >= 1, got {images}")
    graph = load(file)
    if firmware:
        from potlut.firmware_data import test_images

        pixels, labels, norm = test_images(data, graph.in_shape[0])
    else:
        norm = normalization(data, graph.in_shape[0])
    if int8_baseline:
        graph = int8_graph(graph)
    cm = print_c(lower(graph), name, weights, norm)
    from potlut.deploy.mcu_build import write_model

    h, c = write_model(cm, out)
    result = {"header": str(h), "source": str(c), "arena_bytes": cm.arena_bytes,
              "weights": weights, "weight_bytes": cm.weight_bytes,
              "table_bytes": cm.table_bytes}
    if firmware:
        from potlut.deploy.firmware import write_firmware

        man = write_firmware(cm, file, data, (pixels[:images], labels[:images], norm), out,
                             int8_baseline)
        result["firmware"] = {"images": man["images"], "makefile": str(out / "Makefile")}
    if report:
        from potlut.deploy.mcu_report import measure

        result["report"] = measure(file, norm, out / "report")
    if as_json:
        print(json.dumps(result))
        return
    print(f"wrote {h} and {c}: arena {cm.arena_bytes:,} B, weights ({weights}) "
          f"{cm.weight_bytes:,} B, P-LUT rows {cm.table_bytes:,} B")
    if firmware:
        print(f"firmware for QEMU mps2-an386 (Cortex-M4) in {out}: main.c with "
              f"{result['firmware']['images']} {data} test images, startup.c, link.ld, Makefile; "
              f"run: potlut mcu-run {out}")
    if report:
        for row in result["report"]["rows"]:
            print("  ".join(f"{k} {v}" for k, v in row.items()))


@app.command("mcu-run")
@user_errors
def mcu_run_cmd(
    folder: Path = typer.Argument(..., help="firmware folder written by export-c --firmware m4"),
    timeout: float = typer.Option(600, "--timeout", help="seconds QEMU may run"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Build the firmware (arm-none-eabi-gcc), run it under qemu-system-arm (mps2-an386,
    Cortex-M4) and print its Top-1 and its agreement with the Python engine."""
    from potlut.deploy.firmware import verify

    v = verify(folder, timeout)
    result = {"folder": str(folder), "machine": "qemu-system-arm mps2-an386 (Cortex-M4)",
              **v.as_dict()}
    if as_json:
        print(json.dumps(result))
    else:
        print(f"{folder} on qemu-system-arm mps2-an386 (Cortex-M4), {v.images} test images: "
              f"Top-1 {v.top1:.2f}% (engine {v.engine_top1:.2f}%), predictions agree "
              f"{v.agree}/{v.images}, logits equal {v.equal}/{v.images}")
    if v.equal != v.images:
        raise typer.Exit(1)  # a bug, not a user error: the firmware must equal the engine
