"""``potlut report RUN_DIR``: a Markdown report with PNG plots of a finished run.

Reads what ``potlut run`` / ``potlut train`` leave in a run folder (report.json with the
per-epoch history, fp32.ckpt, qat.ckpt) and writes into ``RUN_DIR/report/``:

- ``convergence.png``: train loss and test Top-1 / Top-5 per epoch, FP32 then QAT;
- ``weights.png``: per quantized layer, the distribution of the normalized FP32 weights
  (what the quantizer sees) against the quantized weights (the paper's Fig. 4);
- ``layer_sizes.png``: per layer, FP32 bytes, raw b-bit packing, stage 1 (weight sharing +
  S-Huff), stage 1 + 2 (+ LZMA) and the entropy bound (the paper's Fig. 6), measured on
  the run's .potlut file (written if missing); where the model cannot be exported, the
  analytic sizes (FP32, raw b-bit, entropy bound) are plotted and the report says so;
- ``report.md``: the summary table, the plots, and per-layer tables.

Plots use matplotlib's Agg canvas directly (no pyplot, no display, no global state).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from potlut import models
from potlut.errors import PotlutCheckpointError, PotlutError
from potlut.fileio import atomic_write_bytes
from potlut.nn import convert
from potlut.nn.layers import normalize_weight, quant_layers
from potlut.pipeline import RunConfig, summary_table
from potlut.reporting import md_table, write_report
from potlut.train.checkpoint import load_checkpoint

PLOTS = ("convergence.png", "weights.png", "layer_sizes.png")


def read_run(run_dir: Path) -> tuple[dict, RunConfig]:
    """report.json of a finished run and its RunConfig."""
    path = run_dir / "report.json"
    if not path.is_file():
        raise PotlutCheckpointError(
            f"{run_dir}: no report.json (not a finished run folder; finish it with --resume)"
        )
    try:
        report = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(RunConfig)}
        cfg = RunConfig(**{k: v for k, v in report["config"].items() if k in known})
        report["history"]["fp32"]["epochs"], report["history"]["qat"]["epochs"]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PotlutCheckpointError(f"{path}: unreadable run report ({exc})") from None
    return report, cfg


def model_dims(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(num_classes, in_channels) read off a state dict: first conv's input, last layer's output."""
    weights = [v for k, v in state.items() if k.endswith(".weight") and v.ndim in (2, 4)]
    if not weights:
        raise PotlutCheckpointError("checkpoint has no conv/linear weights")
    first = next((w for w in weights if w.ndim == 4), weights[0])
    return int(weights[-1].shape[0]), int(first.shape[1])


def rebuild(run_dir: Path, cfg: RunConfig) -> tuple[nn.Module, nn.Module]:
    """The run's FP32 model and its trained quantized model, without loading the data."""
    fp32_state = load_checkpoint(run_dir / "fp32.ckpt")["model"]
    q_state = load_checkpoint(run_dir / "qat.ckpt")["model"]
    num_classes, in_channels = model_dims(fp32_state)
    fp32 = models.build(cfg.model, num_classes, in_channels)
    try:
        fp32.load_state_dict(fp32_state)
        qmodel = convert(models.build(cfg.model, num_classes, in_channels), cfg.quant_spec())
        qmodel.load_state_dict(q_state)
    except RuntimeError as exc:
        raise PotlutCheckpointError(
            f"{run_dir}: checkpoints do not match model {cfg.model!r} "
            f"({str(exc).splitlines()[0][:160]})"
        ) from None
    return fp32.eval(), qmodel.eval()


@dataclasses.dataclass
class LayerWeights:
    """One quantized layer: its FP32 weights as the quantizer sees them, and its quantized ones."""

    name: str
    bits: int
    fp32: np.ndarray
    quant: np.ndarray


@torch.no_grad()
def layer_weights(fp32: nn.Module, qmodel: nn.Module) -> list[LayerWeights]:
    """Normalized FP32 weights (fp32.ckpt) and quantized weights (qat.ckpt) of every layer."""
    out = []
    plain = dict(fp32.named_modules())
    for name, layer in quant_layers(qmodel):
        if layer.weight_quant is None:
            continue
        w = plain[name].weight
        wn = normalize_weight(w, layer.wn_per_channel) if layer.weight_norm else w
        out.append(LayerWeights(name, layer.bits_w, wn.flatten().numpy(),
                                layer.quantized_weight().flatten().numpy()))
    return out


def _canvas(nrows: int, ncols: int, w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def plot_convergence(history: dict, path: Path) -> Any:
    """Train loss (left) and test Top-1/Top-5 (right) per epoch; QAT continues FP32's axis.
    Returns the figure (what was drawn can be read back from it)."""
    fig, ax = _canvas(1, 2, 6, 4)
    offset = 0
    for stage, style in (("fp32", "-"), ("qat", "--")):
        epochs = history[stage]["epochs"]
        x = [offset + e["epoch"] for e in epochs]
        label = stage.upper()
        ax[0, 0].plot(x, [e["train_loss"] for e in epochs], style, marker=".", label=label)
        ax[0, 1].plot(x, [e["test_top1"] for e in epochs], style, marker=".",
                      label=f"{label} Top-1")
        ax[0, 1].plot(x, [e["test_top5"] for e in epochs], style, marker="x",
                      label=f"{label} Top-5")
        offset += len(epochs)
        if stage == "fp32":
            for a in ax[0]:
                a.axvline(offset + 0.5, color="0.5", linewidth=0.8, linestyle=":")
    ax[0, 0].set(title="train loss", xlabel="epoch (FP32, then QAT)", ylabel="cross-entropy")
    ax[0, 1].set(title="test accuracy", xlabel="epoch (FP32, then QAT)", ylabel="%")
    for a in ax[0]:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    _save(fig, path)
    return fig


def plot_weights(layers: list[LayerWeights], path: Path) -> Any:
    """Fig. 4 style: histogram of normalized FP32 weights vs frequency of each quantized value
    (returns the figure)."""
    n = max(len(layers), 1)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, ax = _canvas(rows, cols, 3.6, 2.6)
    for i, lw in enumerate(layers):
        a = ax[i // cols, i % cols]
        hi = float(max(np.abs(lw.fp32).max(), np.abs(lw.quant).max(), 1e-12))
        weights = np.full(lw.fp32.shape, 1.0 / lw.fp32.size)
        a.hist(lw.fp32, bins=80, range=(-hi, hi), weights=weights, color="0.6",
               label="FP32 (normalized)")
        values, counts = np.unique(lw.quant, return_counts=True)
        a.vlines(values, 0, counts / lw.quant.size, colors="C3", linewidth=2,
                 label=f"quantized ({len(values)} values)")
        a.set_title(f"{lw.name} ({lw.bits}-bit)", fontsize=8)
        a.tick_params(labelsize=7)
        a.legend(fontsize=6)
    for j in range(len(layers), rows * cols):
        ax[j // cols, j % cols].axis("off")
    _save(fig, path)
    return fig


SIZE_KEYS = (
    ("fp32_bytes", "FP32"),
    ("raw_bytes", "raw b-bit"),
    ("stage1_bytes", "stage 1 (sharing + S-Huff)"),
    ("final_bytes", "stage 1 + 2 (+ LZMA)"),
    ("entropy_bound_bytes", "entropy bound"),
)


def entropy_bound_bytes(q: np.ndarray) -> float:
    """Order-0 bound ``(H(codes) * N + N_nonzero) / 8`` (METHODS §3) from quantized values."""
    _, counts = np.unique(np.abs(q), return_counts=True)
    p = counts / q.size
    h = float(-(p * np.log2(p)).sum())
    return (h * q.size + float(np.count_nonzero(q))) / 8


def analytic_sizes(layers: list[LayerWeights]) -> list[dict[str, Any]]:
    """Per-layer FP32, raw b-bit and entropy-bound bytes computed from the weights alone."""
    return [{"name": lw.name, "bits": lw.bits, "params": int(lw.quant.size),
             "fp32_bytes": 4 * lw.quant.size, "raw_bytes": math.ceil(lw.quant.size * lw.bits / 8),
             "entropy_bound_bytes": round(entropy_bound_bytes(lw.quant), 1)} for lw in layers]


def file_sizes(qmodel: nn.Module, run_dir: Path, out_dir: Path, cfg: RunConfig,
               report: dict) -> tuple[list[dict[str, Any]], str]:
    """Per-layer sizes measured on the run's .potlut file (written into ``out_dir`` if absent)."""
    from potlut.compress import file_stats, read
    from potlut.nn.export import compress_model

    path = run_dir / "model.potlut"
    if not path.is_file():
        from potlut import data as data_mod

        bundle = data_mod.load(cfg.data)
        path = out_dir / "model.potlut"
        meta = {"model": cfg.model, "dataset": bundle.name, "scheme": cfg.scheme,
                "bits": cfg.bits}
        compress_model(qmodel, bundle.in_shape, path, meta=meta)
    graph, info = read(path)
    stats = file_stats(graph, info)
    rows = [r for r in stats["layers"] if r["bits"] < 32]
    total = stats["total"]
    return rows, (f"measured on {path.name} ({total['final_bytes']:,} bytes, "
                  f"{total['compression_rate']}x smaller than FP32)")


def plot_sizes(rows: list[dict[str, Any]], path: Path) -> Any:
    """Fig. 6 style: grouped bars per layer, log scale, one bar per size measure present
    (returns the figure)."""
    keys = [(k, label) for k, label in SIZE_KEYS if rows and k in rows[0]]
    fig, ax = _canvas(1, 1, min(18.0, max(6.0, 2.0 + 0.5 * len(rows))), 4.5)
    a = ax[0, 0]
    width = 0.8 / max(len(keys), 1)
    x = np.arange(len(rows))
    for i, (k, label) in enumerate(keys):
        a.bar(x + (i - (len(keys) - 1) / 2) * width, [max(r[k], 1.0) for r in rows],
              width, label=label)
    a.set_yscale("log")
    a.set_ylim(bottom=1.0)  # an all-zero layer's bound is 0 bytes: drawn at the floor
    a.set_xticks(x, [r["name"] for r in rows], rotation=70, fontsize=7)
    a.set(ylabel="bytes", title="weight size per layer")
    a.legend(fontsize=7)
    a.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return fig


def make_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write report.md and the three PNGs for ``run_dir``; return their paths and facts."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    report, cfg = read_run(run_dir)
    fp32, qmodel = rebuild(run_dir, cfg)
    out.mkdir(parents=True, exist_ok=True)
    plot_convergence(report["history"], out / "convergence.png")
    layers = layer_weights(fp32, qmodel)
    plot_weights(layers, out / "weights.png")
    try:
        sizes, source = file_sizes(qmodel, run_dir, out, cfg, report)
        measured = True
    except PotlutError as exc:
        sizes, measured = analytic_sizes(layers), False
        source = (f"analytic (FP32, raw b-bit packing, order-0 entropy bound), because the "
                  f".potlut file could not be written: {exc}")
    plot_sizes(sizes, out / "layer_sizes.png")
    write_report(out, "report", markdown=_markdown(report, cfg, layers, sizes, source))
    return {"out": str(out), "files": [str(out / p) for p in (*PLOTS, "report.md")],
            "layers": len(layers), "sizes_measured": measured, "sizes_source": source,
            "sizes": sizes}


def _markdown(report: dict, cfg: RunConfig, layers: list[LayerWeights],
              sizes: list[dict[str, Any]], source: str) -> list[str]:
    title = f"{report['model']} on {report['dataset']}, {report['scheme']} {report['bits']}-bit"
    lines = [f"# potlut report: {title}", "", *summary_table(report)]
    h = report["history"]
    lines += [
        "", "## Convergence", "",
        f"{len(h['fp32']['epochs'])} FP32 epochs, then {len(h['qat']['epochs'])} QAT epochs "
        f"(seed {report['seed']}, batch {cfg.batch_size}, lr {cfg.lr}, distribution loss "
        f"{cfg.dist_loss}).", "", "![convergence](convergence.png)", "",
        "## Weights: FP32 vs quantized (cf. the paper's Fig. 4)", "",
        "Grey: the FP32 weights after per-layer normalization (what the quantizer sees); red: "
        "the share of weights at each quantized value after QAT.", "",
        "![weights](weights.png)", "",
    ]
    lines += md_table(
        ["layer", "bits", "weights", "distinct quantized values", "zero share"],
        [(lw.name, lw.bits, f"{lw.quant.size:,}", len(np.unique(lw.quant)),
          f"{float((lw.quant == 0).mean()):.3f}") for lw in layers], "lrrrr")
    keys = [(k, label) for k, label in SIZE_KEYS if sizes and k in sizes[0]]
    lines += ["", "## Compressed size per layer (cf. the paper's Fig. 6)", "",
              f"Sizes in bytes, {source}.", "", "![layer sizes](layer_sizes.png)", ""]
    lines += md_table(["layer", "bits", *(label for _, label in keys)],
                      [(r["name"], r["bits"], *(f"{r[k]:,.0f}" for k, _ in keys))
                       for r in sizes], "lr" + "r" * len(keys))
    lines.append("")
    return lines
