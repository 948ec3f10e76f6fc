"""Integer P-LUT engine against its peers, measured side by side in one run.

Two networks: ResNet20 (3x32x32 input; converted to 4-bit IOS-PoT and calibrated, no
CIFAR training offline) and the small CNN on digits (8x8; trained briefly with the
``potlut run`` recipe). For each: latency at batch 1 and throughput at batch 64 of

- the engine's fast path (C kernels, AVX2 byte-shuffle P-LUT) and its numba gather path,
- the plain int64 integer reference (numpy),
- PyTorch FP32 eager and onnxruntime FP32 of the same network (same weights, as floats).

Everything runs on one thread (torch, onnxruntime, the engine), measurements of all
methods are interleaved in rounds and the median is kept, so a busy shared machine hurts
all of them alike; ratios are what to read.

    pip install -e ".[bench]"   # onnx, onnxruntime
    python benchmarks/bench_infer.py [--rounds 7] [--bits 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from potlut import data as data_mod
from potlut import models
from potlut.compress import dequantized_weights, load
from potlut.compress.graph import ModelGraph
from potlut.infer import IntEngine, lower, op_counts, run_reference
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.export import compress_model
from potlut.pipeline import RunConfig, load_quantized, run

try:
    import onnxruntime as ort
except ModuleNotFoundError:  # optional: pip install -e ".[bench]"
    ort = None


def fp32_twin(name: str, graph: ModelGraph, num_classes: int, in_ch: int) -> nn.Module:
    """The plain FP32 network with the file's weights (dequantized), BatchNorm and bias."""
    m = models.build(name, num_classes, in_ch)
    weights = dequantized_weights(graph)
    mods = dict(m.named_modules())
    with torch.no_grad():
        for n in graph.nodes:
            mod = n.attrs.get("module")
            if n.op in ("conv2d", "linear"):
                mods[mod].weight.copy_(torch.from_numpy(weights[mod]))
                if n.attrs["bias"]:
                    mods[mod].bias.copy_(torch.from_numpy(graph.arrays[f"{mod}.bias"]))
            elif n.op == "batchnorm2d":
                for k in ("weight", "bias", "running_mean", "running_var"):
                    getattr(mods[mod], k).copy_(torch.from_numpy(graph.arrays[f"{mod}.{k}"]))
    return m.eval()


def onnx_session(model: nn.Module, in_shape: tuple[int, ...]):
    if ort is None:
        return None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *in_shape), buf, dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])


def timed(fn, x, reps: int) -> float:
    """Seconds per call, the median of ``reps`` calls."""
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def digits_graph(epochs: int, bits: int, folder: Path) -> ModelGraph:
    cfg = RunConfig(epochs=epochs, qat_epochs=epochs, seed=0, device="cpu", bits=bits)
    run(cfg, folder, progress=False)
    bundle = data_mod.load("digits")
    compress_model(load_quantized(folder, cfg), bundle.in_shape, folder / "m.potlut")
    return load(folder / "m.potlut")


def resnet_graph(bits: int, folder: Path) -> ModelGraph:
    torch.manual_seed(0)
    q = convert(models.build("resnet20", 10, 3), QuantSpec(bits=bits))
    calibrate(q, torch.randn(64, 3, 32, 32))
    compress_model(q.eval(), (3, 32, 32), folder / "resnet20.potlut")
    return load(folder / "resnet20.potlut")


def one_thread() -> None:
    """One thread for torch, numba and numpy's BLAS (the int64 reference). Needed again after
    training/calibration: numba's parallel quantizer kernels reset the OpenMP thread count
    torch shares."""
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits  # ships with scikit-learn

    threadpool_limits(1)
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):  # pragma: no cover
        pass


def bench_model(label: str, name: str, graph: ModelGraph, rounds: int, big: int,
                ref_big: bool) -> dict:
    one_thread()
    in_shape = tuple(graph.in_shape)
    prog = lower(graph)
    fp32 = fp32_twin(name, graph, 10, in_shape[0])
    sess = onnx_session(fp32, in_shape)
    engines = {"fast (C)": IntEngine(prog, "c"), "numba": IntEngine(prog, "numba")}
    rng = np.random.default_rng(0)
    xs = {b: rng.standard_normal((b, *in_shape)).astype(np.float32) for b in (1, big)}
    xt = {b: torch.from_numpy(v) for b, v in xs.items()}

    def eager(x):
        with torch.inference_mode():
            return fp32(x)

    methods = {k: (lambda x, e=e: e.run(x)) for k, e in engines.items()}
    methods["PyTorch FP32 eager"] = eager
    if sess is not None:
        methods["onnxruntime FP32"] = lambda x: sess.run(None, {"x": x})
    inputs = {k: (xt if k.startswith("PyTorch") else xs) for k in methods}
    # agreement of the integer outputs, and warm-up (kernels built, numba compiled)
    ref = run_reference(prog, xs[1])
    for k in engines:
        assert np.array_equal(engines[k].run(xs[1]), ref), k
    for k, fn in methods.items():
        fn(inputs[k][1])
        fn(inputs[k][big])
    lat: dict[str, list[float]] = {k: [] for k in methods}
    thr: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(rounds):  # interleaved, so machine load hits every method alike
        for k, fn in methods.items():
            lat[k].append(timed(fn, inputs[k][1], 15))
            thr[k].append(big / timed(fn, inputs[k][big], 2))
    rows = {k: {"latency_ms": 1e3 * statistics.median(lat[k]),
                "throughput_ips": statistics.median(thr[k])} for k in methods}
    t = time.perf_counter()
    run_reference(prog, xs[1])
    ref1 = time.perf_counter() - t
    refb = None
    if ref_big:
        t = time.perf_counter()
        run_reference(prog, xs[big])
        refb = big / (time.perf_counter() - t)
    rows["integer reference (int64)"] = {"latency_ms": 1e3 * ref1, "throughput_ips": refb}
    assert torch.get_num_threads() == 1
    counts = op_counts(prog)["total"]
    return {"model": label, "in_shape": list(in_shape), "macs": counts["macs"],
            "table_reads": counts["table_reads"], "rows": rows}


def print_table(res: dict, big: int) -> list[str]:
    rows = res["rows"]
    eager, onnx = rows["PyTorch FP32 eager"], rows.get("onnxruntime FP32")
    lines = [f"### {res['model']} (input {res['in_shape']}, {res['macs']:,} MACs, "
             f"{res['table_reads']:,} P-LUT reads per image)", "",
             f"| method | batch 1 latency (ms) | x eager | batch {big} (img/s) | x eager |"
             + (" x onnxruntime (b1 / b64) |" if onnx else ""),
             "|---|---:|---:|---:|---:|" + ("---:|" if onnx else "")]
    for k, r in rows.items():
        tp = r["throughput_ips"]
        cells = [k, f"{r['latency_ms']:.3f}", f"{eager['latency_ms'] / r['latency_ms']:.2f}",
                 "–" if tp is None else f"{tp:,.0f}",
                 "–" if tp is None else f"{tp / eager['throughput_ips']:.2f}"]
        if onnx:
            cells.append(f"{onnx['latency_ms'] / r['latency_ms']:.2f} / "
                         + ("–" if tp is None else f"{tp / onnx['throughput_ips']:.2f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--digits-epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-ref-batch", action="store_true",
                    help="skip the (slow) batch throughput of the int64 reference")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    one_thread()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        graphs = [("ResNet20, 4-bit IOS-PoT" if args.bits == 4 else f"ResNet20, {args.bits}-bit",
                   "resnet20", resnet_graph(args.bits, tmp)),
                  (f"SmallCNN on digits, {args.bits}-bit", "small_cnn",
                   digits_graph(args.digits_epochs, args.bits, tmp / "digits"))]
        results = [bench_model(label, name, g, args.rounds, args.batch, not args.no_ref_batch)
                   for label, name, g in graphs]
    load1 = os.getloadavg()
    out = []
    for r in results:
        out += print_table(r, args.batch) + [""]
    out.append(f"One thread each; {args.rounds} interleaved rounds, medians. Load average "
               f"(1 min) {load0[0]:.1f} before, {load1[0]:.1f} after, on {os.cpu_count()} "
               "cores.")
    print("\n".join(out))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "load": [load0, load1]}, indent=2))


if __name__ == "__main__":
    main()
