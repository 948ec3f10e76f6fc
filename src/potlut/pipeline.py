"""The jobs behind ``potlut run`` and ``potlut compare``, built from the same steps:

1. :func:`pretrain` the FP32 model (checkpointed),
2. :func:`train_quantized`: ``potlut.quantize`` (convert + calibrate), then QAT (with
   PROFIT's progressive freezing when the method asks for it),
3. :func:`integer_file`: write the .potlut file and score it with the integer engine.

Each stage checkpoints into the run folder, so ``resume=True`` continues a killed run
from its last finished epoch and ends with the same result as an uninterrupted run.
"""

from __future__ import annotations

import copy
import platform
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from potlut import __version__, models, reporting
from potlut import data as data_mod
from potlut.errors import PotlutConfigError, PotlutError
from potlut.metrics import evaluate, fixops, weight_bytes
from potlut.nn import QuantSpec, convert, quantize
from potlut.nn.export import snap_batchnorm
from potlut.quant import schedule
from potlut.reporting import md_table
from potlut.schemes import Method, parse_method
from potlut.train import TrainConfig, fit, pick_device
from potlut.train import distributed as pdist
from potlut.train.checkpoint import load_checkpoint
from potlut.train.profit_run import progressive_freezing


@dataclass
class RunConfig:
    """Everything ``potlut run`` needs; recorded verbatim in the report."""

    data: str = "digits"
    model: str | None = None  # None: models.default_for(the data's image shape)
    scheme: str = "iospot"
    bits: int | list[int] = 4  # several widths: one switchable model (train/switchable.py)
    act_signed: bool = True
    weight_norm: str = "auto"  # auto (channel at >= 4 bits, else layer), channel, layer
    epochs: int = 40
    qat_epochs: int | None = None  # default: same as epochs
    batch_size: int = 128
    lr: float = 0.04
    seed: int = 0
    dist_loss: str = "learnable"
    device: str = "auto"
    teacher: bool = True  # several widths: collaborative teacher (distillation)
    swap: bool = True  # several widths: dynamic block swapping
    fp32_ref: bool = True  # also train FP32 on for the QAT epochs: the same-epochs reference
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
        if self.model is not None:
            models.check_name(self.model)
        pick_device(self.device)
        if len(self.widths()) > 1:
            from potlut.train.switchable import check_scheme

            check_scheme(self.scheme)

    def widths(self) -> tuple[int, ...]:
        """The bit-widths asked for, ascending (one for a plain run)."""
        from potlut.nn.switchable import parse_widths

        return parse_widths(self.bits)

    def for_data(self, in_shape: tuple[int, ...]) -> RunConfig:
        """This config with the model named: the given one, else the default for
        ``in_shape`` (LeNet-5 for 28x28 images, small_cnn otherwise)."""
        return self if self.model else replace(self, model=models.default_for(in_shape))

    def quant_spec(self) -> QuantSpec:
        """The conversion spec; ``profit[:SCHEME]`` quantizes with SCHEME (default IOS-PoT)."""
        scheme = parse_method(self.scheme).scheme.name
        return QuantSpec(scheme=scheme, bits=self.widths()[0], act_signed=self.act_signed,
                         weight_norm=self.weight_norm)


def pretrain(cfg: RunConfig, bundle, out: Path, resume: bool, progress: bool,
             meta: dict[str, Any] | None = None) -> tuple[torch.nn.Module, Any]:
    """Step 1: the FP32 model trained by ``cfg`` (checkpoint ``out/fp32.ckpt``), on the CPU,
    and its history."""
    torch.manual_seed(cfg.seed)
    fp32 = models.build(cfg.model, bundle.num_classes, bundle.in_channels)
    hist = fit(fp32, bundle, cfg.train_config("fp32"), stage="fp32",
               checkpoint=out / "fp32.ckpt", resume=resume, progress=progress, meta=meta)
    return fp32.cpu(), hist


def train_quantized(fp32: torch.nn.Module, bundle, method: Method, spec: QuantSpec,
                    tcfg: TrainConfig, out: Path, resume: bool, progress: bool,
                    meta: dict[str, Any] | None = None) -> tuple[torch.nn.Module, Any, str]:
    """Step 2: quantize a copy of ``fp32`` (calibrated on the bundle) and QAT it into
    ``out/qat.ckpt``; returns the model (CPU, BatchNorm folded to the file's precision, so
    what is evaluated is what the file holds), its history and a note (PROFIT's freezing)."""
    qmodel = quantize(fp32, spec, calibration=bundle.calibration_batch())
    ckpt = out / "qat.ckpt"
    with ExitStack() as stack:
        freezer, on_epoch_end = None, None
        if method.profit:  # PROFIT: progressive freezing during QAT
            freezer, on_epoch_end = stack.enter_context(
                progressive_freezing(qmodel, tcfg.epochs, out, ckpt, resume))
        # per-scheme epoch-end steps (ALQ's bit reduction, SQ's ratio, SRQ's bit-widths)
        on_epoch_end = schedule.chain(on_epoch_end, schedule.epoch_callback(
            method.scheme.name, qmodel, tcfg.epochs))
        hist = fit(qmodel, bundle, tcfg, stage="qat", checkpoint=ckpt, resume=resume,
                   progress=progress, on_epoch_end=on_epoch_end, meta=meta)
    note = ("" if freezer is None else
            f"progressive freezing froze {len(freezer.frozen)} conv layers")
    return snap_batchnorm(qmodel.cpu()), hist, note


def fp32_reference(fp32: torch.nn.Module, bundle, cfg: RunConfig, out: Path, resume: bool,
                   progress: bool, meta: dict[str, Any] | None = None
                   ) -> tuple[torch.nn.Module, Any]:
    """A copy of ``fp32`` trained on, unquantized, with the QAT stage's recipe (epochs,
    schedule, seed, batch order) into ``out/fp32_ref.ckpt``: as many epochs in all as the
    quantized model got, so the accuracy gap to it is quantization alone, not training time.

    It continues from the split epoch instead of retraining from scratch, so it costs only
    the QAT epochs (FP32 epochs are cheaper than QAT ones).
    """
    ref = copy.deepcopy(fp32)
    tcfg = replace(cfg.train_config("qat"), dist_loss="off")
    hist = fit(ref, bundle, tcfg, stage="fp32_ref", checkpoint=out / "fp32_ref.ckpt",
               resume=resume, progress=progress, meta=meta)
    return ref.cpu(), hist


MODEL_FILE = "model.potlut"


def integer_file(qmodel: torch.nn.Module, bundle, path: Path,
                 meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Step 3: write ``qmodel`` as a .potlut file and score it with the integer engine.

    Keys: the file's sizes and ``model_file`` (or ``file_error``), ``int_top1`` (None
    where the engine refuses the scheme: ``int_error`` says why), ``int_note`` (the
    codebooks the engine rounds to fixed point, if any; whether XNOR/popcount layers equal
    the reference) and ``engine``: exact / approximate / refused, "(bitwise)" added when
    least-squares binary layers run by popcount.
    """
    from potlut.evaluation import check_bundle, evaluate_int
    from potlut.infer import IntEngine
    from potlut.nn.export import compress_model

    try:
        st = compress_model(qmodel.eval(), bundle.in_shape, path, meta=meta)
    except PotlutError as exc:
        return {"file_bytes": None, "file_error": str(exc), "int_top1": None,
                "int_error": str(exc), "int_note": "", "engine": "refused"}
    keys = ("file_bytes", "entropy_bound_bytes", "compression_rate", "overhead_bytes")
    result: dict[str, Any] = {**{k: st[k] for k in keys}, "model_file": str(path)}
    try:
        engine = IntEngine(path)
        check_bundle(engine, bundle)
        result["int_top1"] = round(evaluate_int(engine, bundle.test)[0], 4)
    except PotlutError as exc:
        return {**result, "int_top1": None, "int_error": str(exc), "int_note": "",
                "engine": "refused"}
    approx = engine.program.approximations()
    err = max((max(a["weight_max_err"], a["act_max_err"]) for a in approx), default=0.0)
    bitwise = _bitwise_note(engine.program, bundle)
    result["int_note"] = "; ".join(filter(None, [
        (f"integer engine rounds {len(approx)} layers' codebooks to fixed point (max level "
         f"error {err:.2g})") if approx else "", bitwise]))
    result["engine"] = ("approximate" if approx else "exact") + (" (bitwise)" if bitwise else "")
    return result


BITWISE_CHECK = 256  # test images on which the popcount path is checked against the reference


def _bitwise_note(program, bundle) -> str:
    """For LS layers: whether XNOR/AND + popcount equals the int64 reference on test images."""
    import numpy as np

    from potlut.infer import run_reference
    from potlut.infer.bitwise import bitwise_layers, run_bitwise

    names = bitwise_layers(program)
    if not names:
        return ""
    n = min(BITWISE_CHECK, len(bundle.test))
    x = torch.stack([bundle.test[i][0] for i in range(n)]).numpy()
    same = np.array_equal(run_bitwise(program, x), run_reference(program, x))
    return (f"{len(names)} layers by XNOR/AND + popcount: "
            f"{'equal to' if same else 'DIFFERENT from'} the int64 reference on {n} test images")


def run(cfg: RunConfig, out: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Run the main job into folder ``out`` and return the report dict."""
    out = Path(out)
    t0 = time.time()
    cfg.validate()  # fail on bad options before any work
    if len(cfg.widths()) > 1:
        from potlut.pipeline_switch import run_switchable

        return run_switchable(cfg, out, resume, progress)
    method = parse_method(cfg.scheme)
    bundle = data_mod.load(cfg.data)
    cfg = cfg.for_data(bundle.in_shape)
    out.mkdir(parents=True, exist_ok=True)
    fp32_meta = {"model": cfg.model, "data": cfg.data}
    fp32, fp32_hist = pretrain(cfg, bundle, out, resume, progress, fp32_meta)
    qat_meta = {**fp32_meta, "scheme": cfg.scheme, "bits": cfg.bits,
                "act_signed": cfg.act_signed}
    qmodel, qat_hist, _ = train_quantized(fp32, bundle, method, cfg.quant_spec(),
                                          cfg.train_config("qat"), out, resume, progress,
                                          qat_meta)
    ref, ref_hist = (fp32_reference(fp32, bundle, cfg, out, resume, progress, fp32_meta)
                     if cfg.fp32_ref else (None, None))
    history = {"fp32": fp32_hist.to_dict(), "qat": qat_hist.to_dict()}
    if ref_hist is not None:
        history["fp32_ref"] = ref_hist.to_dict()
    report = {**measure(cfg, bundle, fp32, qmodel, ref),
              "config": asdict(cfg),
              "history": history,
              "versions": versions(), "out": str(out)}
    if pdist.is_main():
        file_meta = {"model": cfg.model, "dataset": bundle.name, "scheme": cfg.scheme,
                     "bits": cfg.bits}
        report.update(integer_file(qmodel, bundle, out / MODEL_FILE, file_meta))
        report["seconds"] = round(time.time() - t0, 2)
        write_report(report, out)
    return report


def measure(cfg: RunConfig, bundle, fp32: torch.nn.Module, qmodel: torch.nn.Module,
            ref: torch.nn.Module | None = None) -> dict:
    """Accuracy, FIXOPS and weight size of the FP32 and the quantized model, side by side.

    ``fp32_*``: the FP32 model QAT started from (``epochs``); ``fp32_ref_*``: the FP32 model
    trained as long as the quantized one (``epochs + qat_epochs``, see
    :func:`fp32_reference`). ``delta_top1`` is against the reference when there is one
    (``delta_against`` says which), so it measures quantization alone.
    """
    fp_t1, fp_t5 = evaluate(fp32, bundle.test)
    q_t1, q_t5 = evaluate(qmodel, bundle.test)
    fx_fp, fx_q = fixops(fp32, bundle.in_shape), fixops(qmodel, bundle.in_shape)
    wb_fp, wb_q = weight_bytes(fp32), weight_bytes(qmodel)
    qat_epochs = cfg.qat_epochs or cfg.epochs
    rep = {
        "dataset": bundle.name, "model": cfg.model, "scheme": cfg.scheme, "bits": cfg.bits,
        "fp32_top1": round(fp_t1, 4), "fp32_top5": round(fp_t5, 4),
        "fp32_ref_top1": None, "fp32_ref_top5": None, "fp32_ref_epochs": None,
        "quant_top1": round(q_t1, 4), "quant_top5": round(q_t5, 4),
        "delta_top1": round(q_t1 - fp_t1, 4), "delta_top1_vs_start": round(q_t1 - fp_t1, 4),
        "delta_against": "fp32",
        "fixops_fp32": fx_fp, "fixops_quant": fx_q, "fixops_rate": round(fx_fp / fx_q, 4),
        "weight_bytes_fp32": wb_fp, "weight_bytes_quant": wb_q,
        "weight_rate": round(wb_fp / wb_q, 4),
        "epochs": cfg.epochs, "qat_epochs": qat_epochs, "seed": cfg.seed,
    }
    if ref is not None:
        r_t1, r_t5 = evaluate(ref, bundle.test)
        rep.update(fp32_ref_top1=round(r_t1, 4), fp32_ref_top5=round(r_t5, 4),
                   fp32_ref_epochs=cfg.epochs + qat_epochs,
                   delta_top1=round(q_t1 - r_t1, 4), delta_against="fp32_ref")
    return rep


def versions() -> dict[str, str]:
    """The versions a report records."""
    return {"potlut": __version__, "torch": torch.__version__,
            "python": platform.python_version()}


def load_quantized(out: str | Path, cfg: RunConfig) -> torch.nn.Module:
    """Rebuild the trained quantized model of a finished run folder (BatchNorm folded to
    the file's precision, as :func:`train_quantized` returns it)."""
    out = Path(out)
    bundle = data_mod.load(cfg.data)
    cfg = cfg.for_data(bundle.in_shape)
    fp32 = models.build(cfg.model, bundle.num_classes, bundle.in_channels)
    qmodel = convert(fp32, cfg.quant_spec())
    qmodel.load_state_dict(load_checkpoint(out / "qat.ckpt")["model"])
    return snap_batchnorm(qmodel).eval()


SUMMARY_ROWS = [
    ("Top-1 (%)", "fp32_top1", "fp32_ref_top1", "quant_top1"),
    ("Top-5 (%)", "fp32_top5", "fp32_ref_top5", "quant_top5"),
    ("FIXOPS", "fixops_fp32", "fixops_fp32", "fixops_quant"),
    ("Weight bytes", "weight_bytes_fp32", "weight_bytes_fp32", "weight_bytes_quant"),
]


def summary_header(report: dict) -> list[str]:
    """Column names: the FP32 model QAT started from, the same-epochs FP32 reference (when
    trained) and the quantized model, each with its epochs."""
    e, q = report["epochs"], report["qat_epochs"]
    cols = ["metric", f"FP32, {e} epoch{'s' * (e != 1)}"]
    if report.get("fp32_ref_top1") is not None:
        cols.append(f"FP32, {report['fp32_ref_epochs']} epochs")
    return [*cols, f"{report['bits']}-bit {report['scheme']}, {e} + {q} epochs"]


def summary_rows(report: dict) -> list[tuple[str, ...]]:
    """(metric, FP32, [FP32 same epochs,] quantized) rows shared by the terminal table and
    report.md."""

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float) and v.is_integer() and abs(v) >= 100:
            return f"{int(v):,}"
        return f"{v:,.2f}" if isinstance(v, float) else f"{v:,}"

    has_ref = report.get("fp32_ref_top1") is not None

    def row(name: str, *cells: str) -> tuple[str, ...]:
        return (name, *cells) if has_ref else (name, cells[0], cells[-1])

    rows = [row(name, fmt(report[a]), fmt(report[r]), fmt(report[b]))
            for name, a, r, b in SUMMARY_ROWS]
    against = f"FP32, {report['fp32_ref_epochs'] if has_ref else report['epochs']} ep"
    rows.insert(2, row(f"ΔTop-1 vs {against}", "", "", f"{report['delta_top1']:+.2f}"))
    rows.append(row("Compression (FIXOPS / weights)", "1.00 / 1.00", "1.00 / 1.00",
                    f"{report['fixops_rate']:.2f} / {report['weight_rate']:.2f}"))
    if report.get("file_bytes"):
        rows.append(row(".potlut file bytes (rate)", fmt(report["weight_bytes_fp32"]), "",
                        f"{report['file_bytes']:,} ({report['compression_rate']:.2f}x)"))
    if report.get("int_top1") is not None:
        rows.append(row("Integer P-LUT engine Top-1 (%)", "", "", fmt(report["int_top1"])))
    return rows


def summary_table(report: dict) -> list[str]:
    """The summary as Markdown lines (report.md of a run and of ``potlut report``)."""
    header = summary_header(report)
    return md_table(header, summary_rows(report), "l" + "r" * (len(header) - 1))


def write_report(report: dict, out: Path) -> None:
    """report.json and report.md of a run."""
    title = f"{report['model']} on {report['dataset']}, {report['scheme']} {report['bits']}-bit"
    lines = [f"# potlut run: {title}", "", *summary_table(report)]
    lines += ["", f"Seed {report['seed']}, {report['epochs']} FP32 + {report['qat_epochs']} "
              f"QAT epochs, {report['seconds']} s. Versions: {report['versions']}."]
    if report.get("fp32_ref_top1") is not None:
        lines.append(f"The {report['fp32_ref_epochs']}-epoch FP32 reference is the "
                     f"{report['epochs']}-epoch model trained on for the QAT epochs with the "
                     "QAT recipe, unquantized: ΔTop-1 against it is what quantization costs.")
    lines.append("")
    reporting.write_report(out, "report", data=report, markdown=lines)


def default_out_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")

