"""``potlut run``: the main job on the embedded default data set, offline."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from potlut.cli.app import app, user_errors
from potlut.pipeline import RunConfig, default_out_dir, run, summary_header, summary_rows


@app.command("run")
@user_errors
def run_cmd(
    data: str = typer.Option("digits", help="digits, or KIND:DIR such as mnist:/data/mnist"),
    model: str = typer.Option(
        None, help="lenet5, small_cnn, resnet20, ... (default: lenet5 for 28x28 images, "
        "else small_cnn)"),
    scheme: str = typer.Option("iospot", help="quantization scheme of the middle layers"),
    bits: str = typer.Option(
        "4", help="bit-width of weights and activations (2..8); several (e.g. 2,3,4,8): one "
        "switchable model trained for all of them jointly, written as one multi-bit file"),
    teacher: bool = typer.Option(True, help="several widths: collaborative teacher "
                                 "(distillation from a wider width)"),
    swap: bool = typer.Option(True, help="several widths: dynamic block swapping"),
    unsigned_acts: bool = typer.Option(
        False, help="spend every activation bit on the magnitude (non-negative inputs)"
    ),
    weight_norm: str = typer.Option(
        "auto", help="weight normalization: channel (per output channel of a convolution), "
        "layer (the paper's), auto (channel at >= 4 bits, layer below: what measured best on "
        "real CIFAR images)"),
    epochs: int = typer.Option(40, help="FP32 epochs (the paper's 300-epoch schedule, scaled)"),
    qat_epochs: int = typer.Option(None, help="QAT epochs (default: same as --epochs)"),
    batch_size: int = typer.Option(128, help="batch size"),
    lr: float = typer.Option(0.04, help="initial learning rate (SGD, momentum 0.9)"),
    seed: int = typer.Option(0, help="random seed (recorded in the report)"),
    dist_loss: str = typer.Option(
        "learnable", help="distribution loss: off, fixed, learnable (its share of the task "
        "gradient learned), ratio (a fixed share)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N"),
    fp32_ref: bool = typer.Option(
        True, help="also train the FP32 model on for the QAT epochs, so ΔTop-1 compares "
        "models trained equally long (costs the QAT epochs once more, in FP32)"),
    out: Path = typer.Option(None, help="run folder (default runs/<timestamp>)"),
    resume: bool = typer.Option(False, help="continue the run in --out from its checkpoints"),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
) -> None:
    """Train FP32, quantize with QAT, measure, and write report.json + report.md."""
    from potlut.nn.switchable import parse_widths

    widths = parse_widths(bits)
    cfg = RunConfig(
        data=data, model=model, scheme=scheme,
        bits=list(widths) if len(widths) > 1 else widths[0], act_signed=not unsigned_acts,
        teacher=teacher, swap=swap, weight_norm=weight_norm,
        epochs=epochs, qat_epochs=qat_epochs, batch_size=batch_size, lr=lr, seed=seed,
        dist_loss=dist_loss, device=device, fp32_ref=fp32_ref,
    )
    out = out or default_out_dir()
    print_report(run(cfg, out, resume=resume, progress=not as_json), as_json)


def print_report(report: dict, as_json: bool) -> None:
    """The report as one JSON object (``--json``) or as a table plus the report's path."""
    if as_json:
        print(json.dumps({k: v for k, v in report.items() if k not in ("history", "config")}))
        return
    if "widths" in report:
        _print_switchable(report)
        return
    table = Table(title=f"{report['model']} on {report['dataset']}: "
                        f"{report['scheme']} {report['bits']}-bit")
    for i, col in enumerate(summary_header(report)):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in summary_rows(report):
        table.add_row(*row)
    Console().print(table)
    print(f"report: {Path(report['out']) / 'report.md'}  ({report['seconds']} s)")


def _print_switchable(report: dict) -> None:
    """The per-width table of a switchable run."""
    from potlut.pipeline_switch import SWITCH_HEADER, switch_rows

    widths = ",".join(map(str, report["widths"]))
    table = Table(title=f"{report['model']} on {report['dataset']}: {report['scheme']} "
                        f"switchable {widths} bits")
    for col in SWITCH_HEADER:
        table.add_column(col, justify="left" if col == "width" else "right")
    for row in switch_rows(report):
        table.add_row(*row)
    Console().print(table)
    print(f"one multi-bit file {report['file_bytes']:,} B (as separate files "
          f"{report['separate_bytes']:,} B): {report['model_file']}")
    print(f"report: {Path(report['out']) / 'report.md'}  ({report['seconds']} s)")
