"""``potlut report RUN_DIR``: Markdown + PNG plots of a finished run."""

from __future__ import annotations

from pathlib import Path

import typer

from potlut.cli.app import app, user_errors


@app.command("report")
@user_errors
def report_cmd(
    run_dir: Path = typer.Argument(..., help="folder of a finished `potlut run` / `potlut train`"),
    out: Path = typer.Option(None, help="where to write (default RUN_DIR/report)"),
) -> None:
    """Convergence curves, FP32-vs-quantized weight histograms and per-layer sizes."""
    from potlut.report import make_report

    result = make_report(run_dir, out)
    for f in result["files"]:
        print(f)
