"""``potlut compare``: one FP32 baseline, then every scheme x bit-width with the same recipe.

Two FP32 rows: the model every scheme starts from (``epochs``) and, by default, that model
trained on unquantized for the QAT epochs with the QAT recipe (``epochs + qat_epochs``, as
long as every quantized row); ΔTop-1 is against the second, so it is quantization alone.

Produces the layout of the IOS-PoT paper's comparison tables (Tables 4-5): Method, W/A
bits, Top-1, Top-5, weight size, their drops against FP32, FIXOPS, and the compression
rates of weights and FIXOPS; plus whether the scheme can run integer-only.

Every scheme gets the same FP32 start, the same calibration batch and the same QAT
schedule (``RunConfig.train_config("qat")``). The distribution loss of METHODS §2 is part
of the IOS-PoT method, so it is used for IOS-PoT (and PROFIT on IOS-PoT); the baselines
train with ``baseline_dist_loss`` (default ``off``, as in their papers). Each finished
scheme writes its row to ``<out>/schemes/<name>/row.json``; with ``resume`` a rerun reads
finished rows back and continues an interrupted QAT from its checkpoint.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from potlut import data as data_mod
from potlut.errors import PotlutConfigError
from potlut.fileio import atomic_write_bytes
from potlut.metrics import evaluate, fixops, weight_bytes
from potlut.nn import QuantSpec
from potlut.nn.layers import quant_layers
from potlut.pipeline import (
    RunConfig,
    fp32_reference,
    integer_file,
    pretrain,
    train_quantized,
    versions,
)
from potlut.quant import registry
from potlut.quant.iospot import check_bits
from potlut.reporting import md_table, write_report
from potlut.schemes import parse_method
from potlut.train.losses import MODES as DIST_LOSS_MODES

BASELINES = ["apot", "lqnet", "deepshift", "pact", "lsq", "bmfloat", "profit"]
# the other quantizers of the related work (issue 14): least-squares binary, ALQ, SQ, ESB, SRQ
RELATED = ["ls1", "ls2", "lst", "alq", "sq", "esb", "srq"]
DEFAULT_SCHEMES = ["iospot", *BASELINES, *RELATED]

JSON_KEYS = ("scheme", "bits_w", "bits_a", "top1", "top5", "weight_bytes", "fixops",
             "weight_rate", "fixops_rate")
CSV_KEYS = ("method", *JSON_KEYS, "delta_top1", "delta_top5", "integer_only", "int_top1",
            "engine", "note", "seconds")


FP32_ROWS = ("fp32", "fp32_ref")  # the FP32 model QAT starts from; FP32 trained as long as QAT


def method_label(scheme: str) -> str:
    """The name a table row shows, e.g. ``IOS-PoT + progressive freezing``."""
    return "FP32" if scheme in FP32_ROWS else parse_method(scheme).label


def parse_list(text: str | Sequence, kind: type = str) -> list:
    """``"a,b"`` or a list -> list of ``kind``, blanks dropped (user error on bad items)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        item = item.strip() if isinstance(item, str) else item
        if item == "":
            continue
        try:
            out.append(kind(item))
        except (TypeError, ValueError):
            raise PotlutConfigError(f"{item!r} is not a valid {kind.__name__}") from None
    if not out:
        raise PotlutConfigError("the list is empty")
    return out


def validate(
    base: RunConfig, schemes: Sequence[str], bits_list: Sequence[int],
    baseline_dist_loss: str = "off",
) -> None:
    """Fail on an unknown scheme, bit-width or loss mode before any training starts."""
    for mode in (base.dist_loss, baseline_dist_loss):
        if mode not in DIST_LOSS_MODES:
            raise PotlutConfigError(
                f"distribution loss must be one of {', '.join(DIST_LOSS_MODES)}, got {mode!r}")
    for b in bits_list:
        check_bits(b)
    for scheme in schemes:
        name = parse_method(scheme).scheme.name
        for b in bits_list:
            registry.make(name, b, "weight", True)
            registry.make(name, b, "act", base.act_signed)


def _middle_layers(qmodel: nn.Module) -> list[nn.Module]:
    layers = [m for _, m in quant_layers(qmodel)]
    return layers[1:-1] if len(layers) > 2 else layers


def stored_weight_bytes(qmodel: nn.Module) -> float:
    """Analytic weight size plus the side information a scheme stores per block or channel
    (BM-float's tile exponents, LQ-Net's per-channel basis, ALQ's group bases)."""
    side = 0
    for _, m in quant_layers(qmodel):
        sb = getattr(m.weight_quant, "side_bits", None)
        if sb is not None:
            side += sb(tuple(m.weight.shape))
    return weight_bytes(qmodel) + side / 8


def _bits(qmodel: nn.Module) -> tuple[float, int]:
    """Widest middle-layer W/A bits; a fractional average (ALQ) is averaged over weights."""
    mids = _middle_layers(qmodel)
    if any(float(m.bits_w) != int(m.bits_w) for m in mids):
        n = sum(m.weight.numel() for m in mids)
        avg = sum(float(m.bits_w) * m.weight.numel() for m in mids) / n
        return round(avg, 3), max(m.bits_a for m in mids)
    return max(m.bits_w for m in mids), max(m.bits_a for m in mids)


def _row(scheme: str, model: nn.Module, bundle, fp: dict | None, seconds: float) -> dict:
    t1, t5 = evaluate(model, bundle.test)
    fx = fixops(model, bundle.in_shape)
    quantized = fp is not None
    wb = stored_weight_bytes(model) if quantized else weight_bytes(model)
    bw, ba = _bits(model) if quantized else (32, 32)
    facts = parse_method(scheme).scheme if quantized else None
    int_ok, note = (facts.integer_only, facts.integer_note) if facts else (False, "FP32")
    ref = fp or {"top1": t1, "top5": t5, "weight_bytes": wb, "fixops": fx}
    return {
        "method": method_label(scheme), "scheme": scheme, "bits_w": bw, "bits_a": ba,
        "top1": round(t1, 4), "top5": round(t5, 4), "weight_bytes": wb, "fixops": fx,
        "weight_rate": round(ref["weight_bytes"] / wb, 4),
        "fixops_rate": round(ref["fixops"] / fx, 4),
        "delta_top1": round(t1 - ref["top1"], 4), "delta_top5": round(t5 - ref["top5"], 4),
        "integer_only": int_ok, "int_top1": None, "engine": None, "note": note,
        "seconds": round(seconds, 2),
    }


def _recipe(base: RunConfig, scheme: str, bits: int, dist_loss: str) -> dict:
    return {**asdict(base), "scheme": scheme, "bits": bits, "dist_loss": dist_loss}


def compare(
    base: RunConfig,
    schemes: Sequence[str] = tuple(DEFAULT_SCHEMES),
    bits_list: Sequence[int] = (4,),
    out: str | Path = "runs/compare",
    *,
    resume: bool = False,
    progress: bool = True,
    baseline_dist_loss: str = "off",
) -> list[dict]:
    """Train FP32 once, then QAT every scheme x bit-width; write and return the table rows.

    The first row is the FP32 baseline; then one row per (scheme, bits) in the order
    given. Results go to ``out/compare.{md,csv,json}`` (rewritten after every row).
    """
    out = Path(out)
    schemes, bits_list = list(schemes), [int(b) for b in bits_list]
    validate(base, schemes, bits_list, baseline_dist_loss)
    t0 = time.time()
    bundle = data_mod.load(base.data)
    base = base.for_data(bundle.in_shape)
    out.mkdir(parents=True, exist_ok=True)
    fp32, _ = pretrain(base, bundle, out, resume, progress)
    qat_epochs = base.qat_epochs or base.epochs
    rows = [_row("fp32", fp32, bundle, None, time.time() - t0)]
    rows[0]["method"] = f"FP32, {base.epochs} epoch{'s' * (base.epochs != 1)}"
    if base.fp32_ref:  # deltas against FP32 trained as long as every quantized row
        t1 = time.time()
        ref, _ = fp32_reference(fp32, bundle, base, out, resume, progress)
        rows.append(_row("fp32_ref", ref, bundle, None, time.time() - t1))
        rows[-1]["method"] = f"FP32, {base.epochs + qat_epochs} epochs"
    meta = {"config": asdict(base), "schemes": schemes, "bits": bits_list,
            "baseline_dist_loss": baseline_dist_loss, "dataset": bundle.name}
    ref_row = rows[-1]
    for bits in bits_list:
        for scheme in schemes:
            rows.append(_run_scheme(base, scheme, bits, fp32, bundle, ref_row, out,
                                    resume, progress, baseline_dist_loss))
            write_tables(rows, out, meta, time.time() - t0)
    write_tables(rows, out, meta, time.time() - t0)
    return rows


def _run_scheme(base, scheme, bits, fp32, bundle, fp_row, out, resume, progress,
                baseline_dist_loss) -> dict:
    method = parse_method(scheme)
    dist_loss = base.dist_loss if method.scheme.dist_loss else baseline_dist_loss
    folder = out / "schemes" / f"{scheme.replace(':', '-')}_w{bits}"
    recipe = _recipe(base, scheme, bits, dist_loss)
    row_path = folder / "row.json"
    if resume and row_path.is_file():
        saved = json.loads(row_path.read_text())
        if saved.get("recipe") == recipe:
            if progress:
                print(f"compare: {scheme} {bits}-bit already done, skipped", file=sys.stderr)
            return saved["row"]
    t0 = time.time()
    torch.manual_seed(base.seed)
    spec = QuantSpec(scheme=method.scheme.name, bits=bits, act_signed=base.act_signed,
                     weight_norm=base.weight_norm)
    tcfg = replace(base.train_config("qat"), dist_loss=dist_loss)
    if progress:
        print(f"compare: {method.label} {bits}-bit", file=sys.stderr)
    qmodel, _, train_note = train_quantized(fp32, bundle, method, spec, tcfg, folder, resume,
                                            progress)
    row = _row(scheme, qmodel, bundle, fp_row, time.time() - t0)
    file = integer_file(qmodel, bundle, folder / "model.potlut")
    row["int_top1"], row["engine"] = file["int_top1"], file["engine"]
    refused = f"integer engine refuses: {file['int_error']}" if "int_error" in file else ""
    row["note"] = "; ".join(filter(None, [row["note"], refused, file["int_note"], train_note]))
    atomic_write_bytes(row_path, json.dumps({"recipe": recipe, "row": row}, indent=2).encode())
    return row


# -- output ------------------------------------------------------------------------------

def _fmt_int(v: float) -> str:
    return f"{v:,.0f}"


def table_rows(rows: list[dict]) -> list[list[str]]:
    """Rows as the strings the terminal and Markdown tables show."""
    out = []
    for r in rows:
        fp = r["scheme"] in FP32_ROWS
        out.append([
            r["method"], "32/32" if fp else f"{r['bits_w']}/{r['bits_a']}",
            f"{r['top1']:.2f}", f"{r['top5']:.2f}", _fmt_int(r["weight_bytes"]),
            "-" if fp else f"{r['delta_top1']:+.2f}", "-" if fp else f"{r['delta_top5']:+.2f}",
            _fmt_int(r["fixops"]), f"{r['weight_rate']:.2f} / {r['fixops_rate']:.2f}",
            "-" if fp else ("yes" if r["integer_only"] else "no"),
            "-" if r.get("int_top1") is None else f"{r['int_top1']:.2f}",
        ])
    return out


HEADER = ["Method", "W/A", "Top-1 (%)", "Top-5 (%)", "Weight bytes", "ΔTop-1", "ΔTop-5",
          "FIXOPS", "Rate (W / FIXOPS)", "Integer-only", "Int Top-1 (%)"]


def markdown(rows: list[dict], meta: dict, seconds: float) -> list[str]:
    """The comparison table in Markdown, with the integer-only notes below it."""
    cfg = meta["config"]
    lines = [f"# potlut compare: {cfg['model']} on {meta['dataset']}", "",
             *md_table(HEADER, table_rows(rows), "ll" + "r" * 7 + "lr")]
    lines += ["", "Notes:"]
    for r in rows:
        if r["scheme"] not in FP32_ROWS and r["note"]:
            lines.append(f"- {r['method']} {r['bits_w']}/{r['bits_a']}: {r['note']}")
    e, q = cfg["epochs"], cfg["qat_epochs"] or cfg["epochs"]
    against = (f"the FP32 model trained {e} + {q} epochs (the {e}-epoch model trained on "
               f"with the QAT recipe, unquantized), as long as every quantized row: "
               "quantization alone" if any(r["scheme"] == "fp32_ref" for r in rows)
               else f"the {e}-epoch FP32 model QAT started from (it trained {q} epochs less)")
    lines += [
        "", f"ΔTop-1 / ΔTop-5 are against {against}. W/A: bits of the middle layers' weights "
        "and input activations (first/last layers 8-bit); FIXOPS: bw·ba/64 per MAC "
        "(docs/fairness.md).",
        "", f"Seed {cfg['seed']}; {e} FP32 epochs, {q} QAT epochs per scheme; distribution loss "
        f"{cfg['dist_loss']} for IOS-PoT, {meta['baseline_dist_loss']} for the baselines; "
        f"first/last layers 8-bit fixed point; {seconds:.0f} s.", "",
    ]
    return lines


def write_tables(rows: list[dict], out: Path, meta: dict, seconds: float) -> None:
    """compare.json, compare.csv and compare.md."""
    report = {**meta, "rows": rows, "seconds": round(seconds, 2), "versions": versions()}
    write_report(out, "compare", data=report, markdown=markdown(rows, meta, seconds),
                 csv_rows=rows, csv_keys=CSV_KEYS)
