"""``potlut run --bits 2,3,4,8``: one switchable model for several bit-widths, one file.

The same steps as :mod:`potlut.pipeline` (FP32 pre-training, QAT, file, integer engine),
with joint QAT of every width (:mod:`potlut.train.switchable`) and the multi-bit .potlut
file (:mod:`potlut.compress.multibit`); the report has one row per width.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from potlut import data as data_mod
from potlut import models, reporting
from potlut.metrics import evaluate, fixops, weight_bytes
from potlut.nn.switchable import SwitchableModel, convert_switchable, quantize_switchable
from potlut.pipeline import MODEL_FILE, RunConfig, pretrain, versions
from potlut.reporting import md_table
from potlut.train import distributed as pdist
from potlut.train.checkpoint import load_checkpoint
from potlut.train.switchable import SwitchConfig, fit_switchable, load_state


def switch_config(cfg: RunConfig) -> SwitchConfig:
    return SwitchConfig(teacher=cfg.teacher, swap=cfg.swap)


def run_switchable(cfg: RunConfig, out: Path, resume: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """FP32 -> joint QAT of every width -> multi-bit file -> engine per width; the report."""
    t0 = time.time()
    bundle = data_mod.load(cfg.data)
    cfg = cfg.for_data(bundle.in_shape)
    out.mkdir(parents=True, exist_ok=True)
    widths = cfg.widths()
    fp32_meta = {"model": cfg.model, "data": cfg.data}
    fp32, fp32_hist = pretrain(cfg, bundle, out, resume, progress, fp32_meta)
    sm = quantize_switchable(fp32, cfg.quant_spec(), widths, bundle.calibration_batch())
    qat_meta = {**fp32_meta, "scheme": cfg.scheme, "act_signed": cfg.act_signed}
    hist, acc = fit_switchable(sm, bundle, cfg.train_config("qat"), switch_config(cfg),
                               checkpoint=out / "qat.ckpt", resume=resume,
                               progress=progress, meta=qat_meta)
    sm = sm.cpu().eval()
    fp_t1, _ = evaluate(fp32, bundle.test)
    report: dict[str, Any] = {
        "dataset": bundle.name, "model": cfg.model, "scheme": cfg.scheme,
        "bits": list(widths), "widths": list(widths), "teacher": cfg.teacher, "swap": cfg.swap,
        "fp32_top1": round(fp_t1, 4), "fixops_fp32": fixops(fp32, bundle.in_shape),
        "weight_bytes_fp32": weight_bytes(fp32), "per_width": {},
        "epochs": cfg.epochs, "qat_epochs": cfg.qat_epochs or cfg.epochs, "seed": cfg.seed,
        "config": asdict(cfg), "versions": versions(), "out": str(out),
        "history": {"fp32": fp32_hist.to_dict(), "qat": hist.to_dict()},
    }
    for b in widths:
        net = sm.at_bits(b).eval()
        report["per_width"][str(b)] = {"bits": b, "quant_top1": acc[b],
                                       "fixops_quant": fixops(net, bundle.in_shape),
                                       "weight_bytes_quant": weight_bytes(net)}
    if pdist.is_main():
        report.update(multibit_file(sm, bundle, out / MODEL_FILE, cfg))
        report["seconds"] = round(time.time() - t0, 2)
        write_report(report, out)
    return report


def multibit_file(sm: SwitchableModel, bundle, path: Path, cfg: RunConfig) -> dict[str, Any]:
    """Write the multi-bit file and score every width with the integer engine."""
    from potlut.compress.multibit import load_width
    from potlut.evaluation import check_bundle, evaluate_int
    from potlut.infer import IntEngine
    from potlut.nn.switchable import export_multibit

    meta = {"model": cfg.model, "dataset": bundle.name, "scheme": cfg.scheme}
    sizes = export_multibit(sm, bundle.in_shape, path, meta)
    ints = {}
    for b in sm.widths:
        engine = IntEngine(load_width(path, b))
        check_bundle(engine, bundle)
        ints[str(b)] = round(evaluate_int(engine, bundle.test)[0], 4)
    return {"model_file": str(path), "file_bytes": sizes["file_bytes"],
            "separate_bytes": sizes["separate_bytes"],
            "separate": {str(k): v for k, v in sizes["separate"].items()},
            "int_top1": ints}


def switch_rows(report: dict) -> list[tuple[str, ...]]:
    """(bits, fake-quant Top-1, engine Top-1, FIXOPS, weight bytes, own file bytes) rows."""
    rows = [("FP32", f"{report['fp32_top1']:.2f}", "", f"{int(report['fixops_fp32']):,}",
             f"{int(report['weight_bytes_fp32']):,}", "")]
    for key, w in report["per_width"].items():
        it = report.get("int_top1", {}).get(key)
        rows.append((f"{key}-bit", f"{w['quant_top1']:.2f}",
                     "" if it is None else f"{it:.2f}", f"{int(w['fixops_quant']):,}",
                     f"{int(w['weight_bytes_quant']):,}",
                     f"{report.get('separate', {}).get(key, 0):,}"))
    return rows


SWITCH_HEADER = ["width", "Top-1 (%)", "engine Top-1 (%)", "FIXOPS", "weight bytes",
                 "as its own file (B)"]


def write_report(report: dict, out: Path) -> None:
    """report.json and report.md of a switchable run."""
    widths = ",".join(map(str, report["widths"]))
    lines = [f"# potlut run: {report['model']} on {report['dataset']}, {report['scheme']} "
             f"switchable {widths} bits", "", *md_table(SWITCH_HEADER, switch_rows(report),
                                                        "lrrrrr"), "",
             f"One multi-bit file: {report['file_bytes']:,} B; as separate files "
             f"{report['separate_bytes']:,} B. Teacher {'on' if report['teacher'] else 'off'}, "
             f"block swapping {'on' if report['swap'] else 'off'}. Seed {report['seed']}, "
             f"{report['epochs']} FP32 + {report['qat_epochs']} joint QAT epochs, "
             f"{report['seconds']} s.", ""]
    reporting.write_report(out, "report", data=report, markdown=lines)


def load_switchable(out: str | Path, cfg: RunConfig) -> SwitchableModel:
    """Rebuild the trained switchable model of a finished ``--bits A,B,...`` run folder."""
    out = Path(out)
    bundle = data_mod.load(cfg.data)
    cfg = cfg.for_data(bundle.in_shape)
    fp32 = models.build(cfg.model, bundle.num_classes, bundle.in_channels)
    sm = convert_switchable(fp32, cfg.quant_spec(), cfg.widths())
    load_state(sm, load_checkpoint(out / "qat.ckpt")["model"])
    return sm.eval()

