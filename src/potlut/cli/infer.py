"""``potlut infer``: accuracy of the integer-only P-LUT engine on a .potlut file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from potlut.cli.app import app, user_errors
from potlut.errors import PotlutConfigError


@app.command("infer")
@user_errors
def infer_cmd(
    file: Path = typer.Argument(..., help=".potlut model file"),
    data: str = typer.Option(
        "digits", "--data", help="digits, KIND:DIR (e.g. mnist:DIR) or npz:FILE (arrays x, y; "
        "needs no torch)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    batch_size: int = typer.Option(256, "--batch-size", help="images per engine call"),
    backend: str = typer.Option(
        "auto", help="auto, c (best of avx512/avx2/scalar here), avx512, avx2, scalar, numba, "
        "c-layers"),
    threads: int = typer.Option(0, "--threads", help="native backends: threads (0: one per "
                                "physical core)"),
    ops: bool = typer.Option(False, "--ops", help="also print operation counts per layer"),
    bits: int = typer.Option(None, "--bits", help="the bit-width to run (a multi-bit file: "
                             "one of its widths, default the widest)"),
) -> None:
    """Top-1/Top-5 of the integer engine (P-LUT layers, int8 ends) on a data set's test split."""
    from potlut.compress.multibit import file_bits, open_graph
    from potlut.evaluation import check_shape, evaluate_int
    from potlut.infer import IntEngine, op_counts

    if batch_size < 1:
        raise PotlutConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if threads < 0:
        raise PotlutConfigError(f"--threads must be >= 0, got {threads}")
    graph = open_graph(file, bits)
    engine = IntEngine(graph, backend, threads=threads or None)
    name, test, in_shape = _test_split(data)
    check_shape(engine, name, in_shape)
    t0 = time.perf_counter()
    top1, top5 = evaluate_int(engine, test, batch_size)
    secs = time.perf_counter() - t0
    counts = op_counts(engine.program, engine.backend.name)
    result = {
        "file": str(file), "bits": file_bits(graph), "dataset": name,
        "images": len(test[1] if isinstance(test, tuple) else test),
        "int_top1": round(top1, 4), "int_top5": round(top5, 4),
        "backend": engine.backend.name, "frac_bits": engine.program.frac_bits,
        "seconds": round(secs, 3), "ops": {k: counts[k] for k in ("total", "plut", "bit_shift")},
        "exact": engine.program.exact, "approximations": engine.program.approximations(),
    }
    if ops:
        result["ops"]["layers"] = counts["layers"]
    if as_json:
        print(json.dumps(result))
        return
    width = f" at {result['bits']} bits" if result["bits"] is not None else ""
    print(f"{file}{width} on {name} ({result['images']} test images), integer engine "
          f"[{engine.backend.name}]: Top-1 {top1:.2f}%  Top-5 {top5:.2f}%  ({secs:.2f} s)")
    p, s = counts["plut"], counts["bit_shift"]
    print(f"per image: {p['table_reads']:,} P-LUT reads, {p['int8_macs']:,} int8 MACs "
          f"(8-bit first/last layers), {p['adds']:,} adds, {p['shifts']:,} shifts, "
          f"{p['table_bytes']:,} B of tables; bit-shift PoT MACs would need "
          f"{s['shifts']:,} shifts")
    for a in result["approximations"]:
        print(f"approximate: layer {a['layer']} codebooks rounded to fixed point (largest change "
              f"{max(a['weight_max_err'], a['act_max_err']):.3g})")
    if ops:
        _print_layers(counts["layers"])


def _test_split(spec: str) -> tuple[str, object, tuple[int, ...]]:
    """``(name, test split, image shape)`` of ``--data``: an .npz file, or a data set (torch)."""
    kind, _, path = spec.partition(":")
    if kind == "npz":
        from potlut.evaluation import load_arrays

        x, y = load_arrays(path)
        return Path(path).name, (x, y), tuple(x.shape[1:])
    try:
        from potlut import data as data_mod
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise PotlutConfigError(f"--data {spec} needs PyTorch (pip install 'potlut[train]'); "
                                "without it use --data npz:FILE") from None
    bundle = data_mod.load(spec)
    return bundle.name, bundle.test, tuple(bundle.in_shape)


def _print_layers(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="operations per image")
    cols = ["layer", "mode", "bits", "MACs", "table reads", "int8 MACs", "P-LUT entries",
            "P-LUT B", "requant mul", "compares", "shift-scheme shifts"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("layer", "mode") else "right")
    for r in rows:
        t.add_row(r["name"], r["mode"], f"{r['bits_w']}x{r['bits_a']}", f"{r['macs']:,}",
                  f"{r['table_reads']:,}", f"{r['int8_macs']:,}",
                  f"{r['plut_entries']}/{r['plut_full_entries']}", str(r["plut_bytes"]),
                  f"{r['requant_mults']:,}", f"{r['compares']:,}", f"{r['shift_shifts']:,}")
    Console(width=160).print(t)
