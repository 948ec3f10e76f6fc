"""The main job behind ``potlut run``: FP32 training -> QAT -> metrics -> report.

Each stage checkpoints into the run folder, so ``resume=True`` continues a killed run
from its last finished epoch and ends with the same result as an uninterrupted run.
"""

from __future__ import annotations

import json
import platform
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from potlut import __version__, models
from potlut import data as data_mod
from potlut.errors import PotlutConfigError, PotlutError
from potlut.fileio import atomic_write_bytes
from potlut.metrics import evaluate, fixops, weight_bytes
from potlut.nn import QuantSpec, calibrate, convert
from potlut.quant import schedule
from potlut.schemes import parse_method
from potlut.train import TrainConfig, fit, pick_device
from potlut.train import distributed as pdist
from potlut.train.checkpoint import load_checkpoint
from potlut.train.profit_run import progressive_freezing


@dataclass
class RunConfig:
    """Everything ``potlut run`` needs; recorded verbatim in the report."""

    data: str = "digits"
    model: str = "small_cnn"
    scheme: str = "iospot"
    bits: int = 4
    act_signed: bool = True
    epochs: int = 40
    qat_epochs: int | None = None  # default: same as epochs
    batch_size: int = 128
    lr: float = 0.04
    seed: int = 0
    dist_loss: str = "learnable"
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def train_config(self, stage: str) -> TrainConfig:
        epochs = self.epochs if stage == "fp32" else (self.qat_epochs or self.epochs)
        return TrainConfig(
            epochs=epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
            dist_loss=self.dist_loss, device=self.device,
        )

    def validate(self) -> None:
        """Reject bad options before any data is read or any epoch is trained."""
        from potlut.train.losses import MODES

        self.quant_spec().validate()
        for stage in ("fp32", "qat"):
            self.train_config(stage).validate()
        if self.dist_loss not in MODES:
            raise PotlutConfigError(
                f"distribution loss mode must be one of {MODES}, got {self.dist_loss!r}"
            )
        models.check_name(self.model)
        pick_device(self.device)

    def quant_spec(self) -> QuantSpec:
        """The conversion spec; ``profit[:SCHEME]`` quantizes with SCHEME (default IOS-PoT)."""
        scheme = parse_method(self.scheme).scheme.name
        return QuantSpec(scheme=scheme, bits=self.bits, act_signed=self.act_signed)


def run(cfg: RunConfig, out: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Run the main job into folder ``out`` and return the report dict."""
    out = Path(out)
    t0 = time.time()
    cfg.validate()  # fail on bad options before any work
    spec = cfg.quant_spec()
    bundle = data_mod.load(cfg.data)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    fp32 = models.build(cfg.model, bundle.num_classes, bundle.in_channels)
    fp32_meta = {"model": cfg.model, "data": cfg.data}
    fp32_hist = fit(
        fp32, bundle, cfg.train_config("fp32"), stage="fp32",
        checkpoint=out / "fp32.ckpt", resume=resume, progress=progress, meta=fp32_meta,
    )
    qmodel = convert(fp32.cpu(), spec)
    calibrate(qmodel, bundle.calibration_batch())
    qat_cfg = cfg.train_config("qat")
    with ExitStack() as stack:
        on_epoch_end = None
        if parse_method(cfg.scheme).profit:  # PROFIT: progressive freezing during QAT
            _, on_epoch_end = stack.enter_context(progressive_freezing(
                qmodel, qat_cfg.epochs, out, out / "qat.ckpt", resume))
        on_epoch_end = schedule.chain(on_epoch_end, schedule.epoch_callback(
            parse_method(cfg.scheme).scheme.name, qmodel, qat_cfg.epochs))
        qat_hist = fit(
            qmodel, bundle, qat_cfg, stage="qat",
            checkpoint=out / "qat.ckpt", resume=resume, progress=progress,
            on_epoch_end=on_epoch_end, meta={
                **fp32_meta, "scheme": cfg.scheme, "bits": cfg.bits,
                "act_signed": cfg.act_signed,
            },
        )
    fp32.cpu()
    qmodel.cpu()
    fp_t1, fp_t5 = evaluate(fp32, bundle.test)
    q_t1, q_t5 = evaluate(qmodel, bundle.test)
    fx_fp, fx_q = fixops(fp32, bundle.in_shape), fixops(qmodel, bundle.in_shape)
    wb_fp, wb_q = weight_bytes(fp32), weight_bytes(qmodel)
    report = {
        "dataset": bundle.name,
        "model": cfg.model,
        "scheme": cfg.scheme,
        "bits": cfg.bits,
        "fp32_top1": round(fp_t1, 4),
        "fp32_top5": round(fp_t5, 4),
        "quant_top1": round(q_t1, 4),
        "quant_top5": round(q_t5, 4),
        "delta_top1": round(q_t1 - fp_t1, 4),
        "fixops_fp32": fx_fp,
        "fixops_quant": fx_q,
        "fixops_rate": round(fx_fp / fx_q, 4),
        "weight_bytes_fp32": wb_fp,
        "weight_bytes_quant": wb_q,
        "weight_rate": round(wb_fp / wb_q, 4),
        "epochs": cfg.epochs,
        "qat_epochs": cfg.qat_epochs or cfg.epochs,
        "seed": cfg.seed,
        "config": asdict(cfg),
        "history": {"fp32": fp32_hist.to_dict(), "qat": qat_hist.to_dict()},
        "versions": {
            "potlut": __version__, "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "out": str(out),
    }
    if pdist.is_main():
        report.update(_write_model_file(qmodel, bundle, cfg, out))
        report["seconds"] = round(time.time() - t0, 2)
        write_report(report, out)
    return report


MODEL_FILE = "model.potlut"


def _write_model_file(qmodel, bundle, cfg: RunConfig, out: Path) -> dict[str, Any]:
    """Write ``model.potlut`` and return its sizes; a model the file cannot hold is noted."""
    from potlut.nn.export import compress_model

    meta = {"model": cfg.model, "dataset": bundle.name, "scheme": cfg.scheme, "bits": cfg.bits}
    try:
        st = compress_model(qmodel, bundle.in_shape, out / MODEL_FILE, meta=meta)
    except PotlutError as exc:
        return {"file_bytes": None, "file_error": str(exc)}
    keys = ("file_bytes", "entropy_bound_bytes", "compression_rate", "overhead_bytes")
    result = {**{k: st[k] for k in keys}, "model_file": str(out / MODEL_FILE)}
    result.update(_integer_accuracy(out / MODEL_FILE, bundle))
    return result


def _integer_accuracy(path: Path, bundle) -> dict[str, Any]:
    """Top-1 of the integer-only P-LUT engine on the file just written (``int_top1``).

    Schemes whose file the engine cannot run integer-only are reported, not hidden.
    """
    from potlut.evaluation import int_top1

    try:
        return {"int_top1": round(int_top1(path, bundle), 4)}
    except PotlutError as exc:
        return {"int_top1": None, "int_error": str(exc)}


def load_quantized(out: str | Path, cfg: RunConfig) -> torch.nn.Module:
    """Rebuild the trained quantized model of a finished run folder."""
    out = Path(out)
    bundle = data_mod.load(cfg.data)
    fp32 = models.build(cfg.model, bundle.num_classes, bundle.in_channels)
    qmodel = convert(fp32, cfg.quant_spec())
    qmodel.load_state_dict(load_checkpoint(out / "qat.ckpt")["model"])
    return qmodel.eval()


SUMMARY_ROWS = [
    ("Top-1 (%)", "fp32_top1", "quant_top1"),
    ("Top-5 (%)", "fp32_top5", "quant_top5"),
    ("FIXOPS", "fixops_fp32", "fixops_quant"),
    ("Weight bytes", "weight_bytes_fp32", "weight_bytes_quant"),
]


def summary_rows(report: dict) -> list[tuple[str, str, str]]:
    """(metric, FP32, quantized) rows shared by the terminal table and report.md."""

    def fmt(v: Any) -> str:
        if isinstance(v, float) and v.is_integer() and abs(v) >= 100:
            return f"{int(v):,}"
        return f"{v:,.2f}" if isinstance(v, float) else f"{v:,}"

    rows = [(name, fmt(report[a]), fmt(report[b])) for name, a, b in SUMMARY_ROWS]
    rows.append(("Compression (FIXOPS / weights)", "1.00 / 1.00",
                 f"{report['fixops_rate']:.2f} / {report['weight_rate']:.2f}"))
    if report.get("file_bytes"):
        rows.append((".potlut file bytes (rate)", fmt(report["weight_bytes_fp32"]),
                     f"{report['file_bytes']:,} ({report['compression_rate']:.2f}x)"))
    if report.get("int_top1") is not None:
        rows.append(("Integer P-LUT engine Top-1 (%)", "", fmt(report["int_top1"])))
    return rows


def write_report(report: dict, out: Path) -> None:
    """report.json and report.md, each written atomically."""
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    title = f"{report['model']} on {report['dataset']}, {report['scheme']} {report['bits']}-bit"
    lines = [f"# potlut run: {title}", "", "| metric | FP32 | quantized |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in summary_rows(report)]
    lines += ["", f"Seed {report['seed']}, {report['epochs']} FP32 + {report['qat_epochs']} "
              f"QAT epochs, {report['seconds']} s. Versions: {report['versions']}.", ""]
    atomic_write_bytes(out / "report.md", "\n".join(lines).encode())


def default_out_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")

