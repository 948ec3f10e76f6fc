"""``potlut compare``: IOS-PoT and the paper's baselines, trained alike, in one table."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from potlut.cli.app import app, user_errors
from potlut.compare import DEFAULT_SCHEMES, HEADER, compare, parse_list, table_rows
from potlut.config import load_config
from potlut.errors import PotlutConfigError
from potlut.pipeline import RunConfig, default_out_dir

COMPARE_KEYS = {"schemes", "bits", "baseline_dist_loss"}


@app.command("compare")
@user_errors
def compare_cmd(
    schemes: str = typer.Option(
        None, help="comma-separated schemes; 'profit' = IOS-PoT trained with PROFIT, "
        "'profit:SCHEME' another base (default: " + ",".join(DEFAULT_SCHEMES) + ")"),
    bits: str = typer.Option(None, help="comma-separated bit-widths, e.g. 3,4,5 (default 4)"),
    model: str = typer.Option(None, help="lenet5, small_cnn, resnet20, ... (default: lenet5 "
                              "for 28x28 images, else small_cnn)"),
    data: str = typer.Option(None, help="digits, or KIND:DIR such as cifar10:/data/cifar10"),
    epochs: int = typer.Option(None, help="FP32 epochs (default 30)"),
    qat_epochs: int = typer.Option(None, help="QAT epochs of every scheme (default: --epochs)"),
    batch_size: int = typer.Option(None, help="batch size (default 128)"),
    lr: float = typer.Option(None, help="initial learning rate (default 0.04)"),
    seed: int = typer.Option(None, help="random seed (default 0)"),
    dist_loss: str = typer.Option(
        None, help="IOS-PoT's distribution loss: off, fixed, learnable, ratio"),
    baseline_dist_loss: str = typer.Option(
        None, help="distribution loss of the baselines (default off, as in their papers)"),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:N"),
    unsigned_acts: bool = typer.Option(
        None, "--unsigned-acts/--signed-acts", help="every scheme spends all activation bits "
        "on the magnitude (default: signed, a sign bit and b-1 magnitude bits)"),
    weight_norm: str = typer.Option(
        None, help="auto (default: per output channel at >= 4 bits, per layer below), "
        "channel or layer (METHODS §1.1)"),
    fp32_ref: bool = typer.Option(
        None, "--fp32-ref/--no-fp32-ref", help="also train FP32 as long as the quantized "
        "rows (default on): ΔTop-1 against it is quantization alone"),
    config: Path = typer.Option(
        None, "--config", help="TOML file: RunConfig keys plus a compare table"),
    out: Path = typer.Option(None, help="output folder (default runs/<timestamp>)"),
    resume: bool = typer.Option(False, help="skip finished schemes, continue interrupted ones"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as one JSON list"),
) -> None:
    """Train FP32 once, QAT every scheme x bit-width alike, write compare.{md,csv,json}."""
    given = {"model": model, "data": data, "epochs": epochs, "qat_epochs": qat_epochs,
             "batch_size": batch_size, "lr": lr, "seed": seed, "dist_loss": dist_loss,
             "device": device, "fp32_ref": fp32_ref, "weight_norm": weight_norm,
             "act_signed": None if unsigned_acts is None else not unsigned_acts}
    section: dict = {}
    if config is not None:
        base, sections = load_config(config, given)
        section = sections.get("compare", {})
        unknown = set(section) - COMPARE_KEYS
        if unknown:
            raise PotlutConfigError(
                f"{config}: unknown keys in [compare]: {sorted(unknown)}; "
                f"known: {', '.join(sorted(COMPARE_KEYS))}")
    else:
        base = RunConfig(**{k: v for k, v in given.items() if v is not None})
    try:
        scheme_list = parse_list(schemes if schemes is not None
                                 else section.get("schemes", DEFAULT_SCHEMES))
        bits_list = parse_list(bits if bits is not None else section.get("bits", [4]), int)
    except PotlutConfigError as exc:
        raise PotlutConfigError(f"--schemes/--bits: {exc}") from None
    bdl = baseline_dist_loss or section.get("baseline_dist_loss", "off")
    out = out or default_out_dir()
    rows = compare(base, scheme_list, bits_list, out, resume=resume, progress=not as_json,
                   baseline_dist_loss=bdl)
    if as_json:
        print(json.dumps(rows))
        return
    model_name = json.loads((out / "compare.json").read_text())["config"]["model"]
    table = Table(title=f"{model_name} on {base.data}: FP32 vs. quantized")
    for i, col in enumerate(HEADER):
        table.add_column(col, justify="left" if i < 2 else "right")
    for r in table_rows(rows):
        table.add_row(*r)
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console = Console(width=160)
    console.print(table)
    print(f"tables: {out / 'compare.md'}, compare.csv, compare.json")
