"""``potlut export-c``: a .potlut file as C99 for a microcontroller (``NAME.h``, ``NAME.c``)."""

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
                             "NAME_quantize_input: digits, or SCALE:MEAN,..:STD,.. "
                             "(x = (p / SCALE - MEAN) / STD)"),
    report: bool = typer.Option(False, "--report", help="also build for Cortex-M4 and print "
                                "flash, RAM and instructions against the int8 baseline"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Generate C99 (no malloc, no floating point) from the file's integer program."""
    from potlut.compress import load
    from potlut.deploy.c_printer import WEIGHT_FORMATS, c_ident, print_c
    from potlut.deploy.mcu_int8 import int8_graph
    from potlut.deploy.mcu_report import normalization
    from potlut.infer.program import lower

    if weights not in WEIGHT_FORMATS:
        raise PotlutConfigError(f"--weights must be packed or shuff, got {weights!r}")
    if c_ident(name) != name:
        raise PotlutConfigError(f"--name {name!r} is not a C identifier")
    graph = load(file)
    norm = normalization(data, graph.in_shape[0])
    if int8_baseline:
        graph = int8_graph(graph)
    cm = print_c(lower(graph), name, weights, norm)
    from potlut.deploy.mcu_build import write_model

    h, c = write_model(cm, out)
    result = {"header": str(h), "source": str(c), "arena_bytes": cm.arena_bytes,
              "weights": weights, "weight_bytes": cm.weight_bytes,
              "table_bytes": cm.table_bytes}
    if report:
        from potlut.deploy.mcu_report import measure

        result["report"] = measure(file, norm, out / "report")
    if as_json:
        print(json.dumps(result))
        return
    print(f"wrote {h} and {c}: arena {cm.arena_bytes:,} B, weights ({weights}) "
          f"{cm.weight_bytes:,} B, P-LUT rows {cm.table_bytes:,} B")
    if report:
        for row in result["report"]["rows"]:
            print("  ".join(f"{k} {v}" for k, v in row.items()))
