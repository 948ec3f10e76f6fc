"""``potlut report RUN_DIR``: Markdown + PNG plots of a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from potlut.cli.app import app, user_errors


@app.command("report")
@user_errors
def report_cmd(
    run_dir: Path = typer.Argument(..., help="folder of a finished `potlut run` / `potlut train`"),
    out: Path = typer.Option(None, help="where to write (default RUN_DIR/report)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (files, sizes)"),
) -> None:
    """Convergence curves, FP32-vs-quantized weight histograms and per-layer sizes."""
    from potlut.report import make_report

    result = make_report(run_dir, out)
    if as_json:
        print(json.dumps(result))
        return
    for f in result["files"]:
        print(f)
