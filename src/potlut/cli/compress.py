"""``potlut compress`` (trained run -> .potlut file) and ``potlut inspect`` (sizes per layer)."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from potlut.cli.app import app, user_errors
from potlut.errors import PotlutCheckpointError, PotlutConfigError


def _run_folder(checkpoint: Path) -> Path:
    """The run folder of ``checkpoint`` (the folder itself or the folder of its qat.ckpt)."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    if not checkpoint.exists():
        raise PotlutCheckpointError(f"{checkpoint}: no such run folder or checkpoint")
    if not (folder / "qat.ckpt").is_file():
        raise PotlutCheckpointError(f"{folder}: no qat.ckpt (not a finished `potlut run` folder)")
    return folder


def _run_config(folder: Path):
    from potlut.pipeline import RunConfig

    path = folder / "report.json"
    if not path.is_file():
        raise PotlutCheckpointError(f"{folder}: no report.json; finish the run (--resume) first")
    try:
        cfg = json.loads(path.read_text())["config"]
        known = {f.name for f in fields(RunConfig)}
        return RunConfig(**{k: v for k, v in cfg.items() if k in known})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PotlutCheckpointError(f"{path}: unreadable run config ({exc})") from None


@app.command("compress")
@user_errors
def compress_cmd(
    checkpoint: Path = typer.Argument(..., help="run folder of `potlut run` (or its qat.ckpt)"),
    output: Path = typer.Option(
        None, "-o", "--output", help="file to write (default RUN/model.potlut)"
    ),
    coder: str = typer.Option(
        "shuff", help="weight coder: shuff (S-Huff, default), rans (nearer the bound) or packed"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (the sizes)"),
) -> None:
    """Write the trained quantized model of a run as a .potlut file (S-Huff + LZMA)."""
    from potlut import data as data_mod
    from potlut.compress import CODERS
    from potlut.nn.export import compress_model
    from potlut.pipeline import load_quantized

    if coder not in CODERS:
        raise PotlutConfigError(f"unknown coder {coder!r}; choose one of: {', '.join(CODERS)}")
    folder = _run_folder(checkpoint)
    cfg = _run_config(folder)
    bundle = data_mod.load(cfg.data)
    out = output or folder / "model.potlut"
    if len(cfg.widths()) > 1:  # a switchable run: one multi-bit file
        from potlut.nn.switchable import export_multibit
        from potlut.pipeline_switch import load_switchable

        meta = {"model": cfg.model, "dataset": bundle.name, "scheme": cfg.scheme}
        st = export_multibit(load_switchable(folder, cfg), bundle.in_shape, out, meta, coder)
        line = (f"{out}: {st['file_bytes']:,} bytes, bit-widths "
                f"{','.join(map(str, cfg.widths()))} (as separate files "
                f"{st['separate_bytes']:,} bytes)")
    else:
        qmodel = load_quantized(folder, cfg)
        meta = {"model": cfg.model, "dataset": bundle.name, "scheme": cfg.scheme,
                "bits": cfg.bits}
        st = compress_model(qmodel, bundle.in_shape, out, meta=meta, coder=coder)
        line = (f"{out}: {st['file_bytes']:,} bytes (FP32 {st['fp32_bytes']:,}, rate "
                f"{st['compression_rate']:.2f}x; entropy bound "
                f"{st['entropy_bound_bytes']:,.0f} + overhead {st['overhead_bytes']:,})")
    print(json.dumps({"file": str(out), **st}) if as_json else line)


@app.command("inspect")
@user_errors
def inspect_cmd(
    file: Path = typer.Argument(..., help=".potlut file"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Sizes of a .potlut file per layer: FP32, raw packing, stage 1, final, entropy bound."""
    from potlut.compress import file_stats, read
    from potlut.compress.multibit import is_multibit_file

    if is_multibit_file(file):
        _inspect_multibit(file, as_json)
        return
    graph, info = read(file)
    st = file_stats(graph, info)
    st["meta"] = graph.meta
    st["file"] = str(file)
    if as_json:
        print(json.dumps(st))
        return
    t = Table(title=f"{file} (format v{st['version']}, coder {st['coder']})")
    cols = ["layer", "params", "zero %", "bits", "FP32 B", "raw B", "stage-1 B", "final B",
            "bound B", "rate"]
    for c in cols:
        t.add_column(c, justify="left" if c == "layer" else "right")
    for r in st["layers"]:
        t.add_row(r["name"], f"{r['params']:,}", f"{100 * r['zero_fraction']:.1f}",
                  str(r["bits"]), f"{r['fp32_bytes']:,}", f"{r['raw_bytes']:,}",
                  f"{r['stage1_bytes']:,}", f"{r['final_bytes']:,}",
                  f"{r['entropy_bound_bytes']:,.0f}", f"{r['compression_rate']:.2f}")
    o = st["other"]
    t.add_row("other", "", "", "32", f"{o['fp32_bytes']:,}",
              f"{o['fp32_bytes']:,}", f"{o['stage1_bytes']:,}", f"{o['final_bytes']:,}", "", "")
    tot = st["total"]
    t.add_row("total", f"{tot['params']:,}", "", "", f"{tot['fp32_bytes']:,}",
              f"{tot['raw_bytes']:,}", f"{tot['stage1_bytes']:,}", f"{tot['final_bytes']:,}",
              f"{tot['entropy_bound_bytes']:,.0f}", f"{tot['compression_rate']:.2f}",
              style="bold")
    Console(width=None if sys.stdout.isatty() else 160).print(t)
    gap = st["bound_gap"]
    print(f"other = overhead {st['overhead_bytes']:,} B (header {st['header_bytes']} B, "
          "architecture, BN, bias, codebooks, code tables); coded weights "
          f"{tot['final_bytes'] - st['overhead_bytes']:,} B"
          + (f", {100 * gap:+.1f}% against the entropy bound." if gap is not None else ".")
          + " Per-layer final bytes: each layer's stage-1 data LZMA-compressed alone.")


def _inspect_multibit(file: Path, as_json: bool) -> None:
    """Sizes of a multi-bit file: per width, shared, and the widths as separate files."""
    from potlut.compress.multibit import multibit_stats

    st = multibit_stats(file)
    if as_json:
        print(json.dumps(st))
        return
    t = Table(title=f"{file}: one model at {', '.join(map(str, st['widths']))} bits "
                    f"(base {st['base_bits']} bits)")
    for c in ("part", "stored B", "alone, LZMA B", "as its own file B", "nested layers"):
        t.add_column(c, justify="left" if c in ("part", "nested layers") else "right")
    for w in st["per_width"]:
        t.add_row(f"{w['bits']} bits", f"{w['stored_bytes']:,}", f"{w['lzma_bytes']:,}",
                  f"{w['separate_file_bytes']:,}", ", ".join(w["nested"]) or "-")
    t.add_row("shared", f"{st['shared_bytes']:,}", f"{st['shared_lzma_bytes']:,}", "", "")
    t.add_row("file", f"{st['file_bytes']:,}", "", f"{st['separate_bytes']:,}", "",
              style="bold")
    Console(width=None if sys.stdout.isatty() else 160).print(t)
    print(f"one file {st['file_bytes']:,} B against {st['separate_bytes']:,} B as separate "
          f"files ({100 * st['file_bytes'] / st['separate_bytes']:.1f}%). Stored: stage-1 bytes "
          "of what only that width holds (BN, activation scales, its weight codes; the base "
          "width's inside the embedded base file); shared: arrays common to all widths and "
          "the architecture's arrays in the base file.")
