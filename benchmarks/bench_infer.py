"""Integer P-LUT engine against its peers, measured side by side in one run.

Two networks: ResNet20 (3x32x32 input; converted to IOS-PoT and calibrated, no CIFAR
training offline, BatchNorm drawn as training leaves it; with signed activations, the
paper's, and unsigned, the accuracy recipe's) and the small CNN on digits (8x8; trained
briefly with the ``potlut run`` recipe). For each: latency at batch 1 and throughput at
batch 64 of

- the engine's whole-network C runner for every instruction set this CPU has (AVX-512,
  AVX2; shift-add kernels where the weights are powers of two, and the table-lookup
  kernels alone, ``lut``), on one thread and on two, the earlier layer-by-layer C
  kernels, and the numba gather path,
- the plain int64 integer reference (numpy),
- PyTorch FP32 eager and onnxruntime FP32 of the same network (same weights, as floats).

Everything runs on one thread (torch, onnxruntime, the engine), measurements of all
methods are interleaved in rounds and the median is kept, so a busy shared machine hurts
all of them alike; ratios are what to read.

    pip install -e ".[bench]"   # onnx, onnxruntime
    python benchmarks/bench_infer.py [--rounds 7] [--bits 4 3] [--acts signed unsigned]
                                     [--profile] [--json out.json]

``--profile`` adds a per-layer profile (CPU time of each step of the fastest engine,
batch of ``--batch`` images, one thread) to say where the time goes. The scaling from one
thread to two is measured apart, in wall clock and process CPU time (``--cpu-time`` counts
only the calling thread, so under it the main table leaves out its 2-thread row).
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
from potlut.infer.kernels.native import NativeNet, supported_isas
from potlut.nn import QuantSpec, calibrate, convert
from potlut.nn.convert import calibrate_scales
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
            elif n.op == "batchnorm2d":  # folded in the file: x * scale + shift
                mods[mod].weight.copy_(torch.from_numpy(graph.arrays[f"{mod}.scale"]))
                mods[mod].bias.copy_(torch.from_numpy(graph.arrays[f"{mod}.shift"]))
                mods[mod].running_mean.zero_()
                mods[mod].running_var.fill_(1.0)
                mods[mod].eps = 0.0
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


CLOCK = time.perf_counter  # --cpu-time: time.thread_time


def timed(fn, x, reps: int) -> float:
    """Seconds per call, the median of ``reps`` samples (wall clock, or with ``--cpu-time``
    this thread's CPU time: every method here computes on the calling thread, and CPU time
    does not count the time a loaded machine keeps the process waiting)."""
    t = CLOCK()
    fn(x)
    # a sample times enough back-to-back calls to last about 2 ms: one 10-us call timed alone
    # is at the mercy of the clock's own cost and jitter (the digits CNN swung 0.7-1.4x)
    inner = max(1, min(1000, int(2e-3 / max(CLOCK() - t, 1e-7))))
    ts = []
    for _ in range(reps):
        t = CLOCK()
        for _ in range(inner):
            fn(x)
        ts.append((CLOCK() - t) / inner)
    return statistics.median(ts)


def digits_graph(epochs: int, bits: int, folder: Path) -> ModelGraph:
    cfg = RunConfig(epochs=epochs, qat_epochs=epochs, seed=0, device="cpu", bits=bits)
    run(cfg, folder, progress=False)
    bundle = data_mod.load("digits")
    compress_model(load_quantized(folder, cfg), bundle.in_shape, folder / "m.potlut")
    return load(folder / "m.potlut")


def resnet_graph(bits: int, folder: Path, act_signed: bool = True,
                 trained_bn: bool = True) -> ModelGraph:
    """ResNet20 at ``bits``, converted and calibrated on noise (no CIFAR training here).

    ``trained_bn``: BatchNorm scales, shifts and statistics drawn as training leaves them
    (scales 0.3..1.5, shifts and means +-0.5, variances 0.2..3), so the requantization
    multipliers are not whole multiples of 2^R as they are at initialization (which would
    let every layer take the 32-bit epilogue that trained models rarely get).
    ``act_signed``: the paper's signed activations (``potlut run``'s default) or every bit on
    the magnitude (``--unsigned-acts``, the accuracy recipe: 4-bit values reach 2^14). The
    activation scales are calibrated again for the drawn BatchNorm."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    q = convert(models.build("resnet20", 10, 3), QuantSpec(bits=bits, act_signed=act_signed))
    calibrate(q, torch.randn(64, 3, 32, 32))
    if trained_bn:
        with torch.no_grad():
            for m in q.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.3, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.2, 3.0)
            # the quantizers' scales chosen again for the BatchNorm they run with (eval mode,
            # as a trained model's fit its own): with the scales of the first BatchNorm the
            # 4-bit classifier's input saturated and every image gave the same logits
            calibrate_scales(q.eval(), torch.randn(64, 3, 32, 32))
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
                ref_big: bool, profile: bool = False) -> dict:
    one_thread()
    in_shape = tuple(graph.in_shape)
    prog = lower(graph)
    fp32 = fp32_twin(name, graph, 10, in_shape[0])
    sess = onnx_session(fp32, in_shape)
    isas = [k for k in ("avx512", "avx2") if k in supported_isas()]
    engines = {}
    for k in isas:
        engines[f"C {k}"] = IntEngine(prog, k, threads=1)
        engines[f"C {k}, lut"] = IntEngine(prog, k, threads=1, kernels="lut")
    if isas and CLOCK is time.perf_counter:  # the calling thread's CPU time misses a worker's
        engines[f"C {isas[0]}, 2 threads"] = IntEngine(prog, isas[0], threads=2)
    engines["C layer by layer"] = IntEngine(prog, "c-layers")
    engines["numba"] = IntEngine(prog, "numba")
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
    # and every layer's codes of a batch (equal logits alone can hide a wrong layer where a
    # saturated classifier input makes them the same for any input)
    ref_all = run_reference(prog, xs[big][:4], keep=True)
    for isa in isas:
        env = NativeNet(prog, isa, threads=1).run(xs[big][:4], keep=True)
        bad = [n for n in env if n in ref_all and not np.array_equal(env[n], ref_all[n])]
        assert not bad, (isa, bad[:3])
    reps = {}
    for k, fn in methods.items():
        fn(inputs[k][1])
        fn(inputs[k][big])
        t = time.perf_counter()
        fn(inputs[k][big])  # calls per sample: >= 2, about 50 ms of batches in all
        reps[k] = max(2, min(50, int(0.05 / max(time.perf_counter() - t, 1e-6))))
    lat: dict[str, list[float]] = {k: [] for k in methods}
    thr: dict[str, list[float]] = {k: [] for k in methods}
    scaling = ThreadScaling(prog, isas[0], xs[big]) if isas else None
    for _ in range(rounds):  # interleaved, so machine load hits every method alike
        if scaling:
            scaling.pairs(5)
        for k, fn in methods.items():
            lat[k].append(timed(fn, inputs[k][1], 15))
            thr[k].append(big / timed(fn, inputs[k][big], reps[k]))
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
    out = {"model": label, "in_shape": list(in_shape), "macs": counts["macs"],
           "table_reads": counts["table_reads"], "rows": rows}
    if profile and isas:
        out["profile"] = layer_profile(prog, isas[0], xs[big])
    if isas:
        out["threads"] = scaling.result()
    return out


class ThreadScaling:
    """The C runner on 1 and 2 threads at one batch, calls alternating one by one: wall
    seconds per call and process CPU seconds per image (every thread counted), medians, and
    the speed-up as the median of each pair's ratio. The pairs are taken a few per round of
    the main table, spread over its whole run: a neighbour's burst on a shared host (its
    second core slower for a second or two) then spoils a few pairs, not the measurement."""

    def __init__(self, prog, isa: str, x: np.ndarray) -> None:
        self.x = x
        self.nets = {t: NativeNet(prog, isa, threads=t) for t in (1, 2)}
        self.wall: dict[int, list[float]] = {t: [] for t in self.nets}
        self.cpu: dict[int, list[float]] = {t: [] for t in self.nets}
        for net in self.nets.values():
            net.run(x)

    def pairs(self, n: int) -> None:
        for _ in range(n):
            for t, net in self.nets.items():
                w0, c0 = time.perf_counter(), time.process_time()
                net.run(self.x)
                self.wall[t].append(time.perf_counter() - w0)
                self.cpu[t].append((time.process_time() - c0) / len(self.x))

    def result(self) -> list[dict]:
        pairs = [a / b for a, b in zip(self.wall[1], self.wall[2], strict=True)]
        return [{"threads": t, "wall_ms": 1e3 * statistics.median(self.wall[t]),
                 "cpu_us_per_image": 1e6 * statistics.median(self.cpu[t]),
                 "speedup": 1.0 if t == 1 else statistics.median(pairs), "pairs": len(pairs)}
                for t in self.nets]


def layer_profile(prog, isa: str, x: np.ndarray, reps: int = 5) -> list[dict]:
    """CPU microseconds per image of every step of the C runner (one thread), with the
    default kernels and with table lookups alone (``lut``), and the kernel each used."""
    rows: list[dict] = []
    for policy in ("auto", "lut"):
        net = NativeNet(prog, isa, threads=1, kernels=policy)
        net.run(x)
        prof = np.zeros(len(net.plan.op_labels), np.int64)
        for _ in range(reps):
            net.run(x, prof=prof)
        kernels = iter(net.kernels())
        macs = {st.name: st.macs for st in prog.layers()}
        for i, (label, ns) in enumerate(zip(net.plan.op_labels, prof, strict=True)):
            if policy == "auto":
                rows.append({"step": label})
            kind, name = (label.split(" ", 1) + [""])[:2]
            us = float(ns) / 1e3 / reps / len(x)
            rows[i][f"us_{policy}"] = us
            if kind == "Layer":
                rows[i][f"kernel_{policy}"] = next(kernels)
                rows[i][f"gmacs_{policy}"] = macs[name] / us / 1e3 if us > 0 else None
    return rows


def print_profile(res: dict) -> list[str]:
    prof = res.get("profile")
    if not prof:
        return []
    tot = {p: sum(r[f"us_{p}"] for r in prof) for p in ("auto", "lut")}
    lines = [f"Per-step CPU time, {res['model']}, fastest ISA, one thread, per image: default "
             "kernels vs table lookups alone (lut):", "",
             "| step | kernel | us | GMAC/s | lut kernel | us | GMAC/s |",
             "|---|---|---:|---:|---|---:|---:|"]

    def g(v):
        return "" if v is None else f"{v:.1f}"

    for r in prof:
        lines.append(f"| {r['step']} | {r.get('kernel_auto', '')} | {r['us_auto']:.1f} | "
                     f"{g(r.get('gmacs_auto'))} | {r.get('kernel_lut', '')} | "
                     f"{r['us_lut']:.1f} | {g(r.get('gmacs_lut'))} |")
    lines.append(f"| total | | {tot['auto']:.1f} | | | {tot['lut']:.1f} | |")
    return lines + [""]


def cpu_flags() -> str:
    """The SIMD flags of this CPU that the kernels use (from /proc/cpuinfo)."""
    want = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vbmi",
            "avx512_vnni", "asimd"]
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f
                          if ln.startswith(("flags", "Features"))), [])
            f.seek(0)
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "?")
    except OSError:
        return "unknown CPU"
    return f"{model}: " + " ".join(k for k in want if k in flags)


def print_threads(res: dict, big: int) -> list[str]:
    rows = res.get("threads")
    if not rows:
        return []
    one = rows[0]
    lines = [f"Threads, {res['model']}, C runner, batch {big} (wall clock per call and "
             "process CPU time per image, all threads; x 1 thread: the median ratio of "
             "alternating calls):", "",
             "| threads | wall ms / batch | x 1 thread (wall) | CPU us / image |",
             "|---:|---:|---:|---:|"]
    for r in rows:
        up = r.get("speedup", one["wall_ms"] / r["wall_ms"])
        lines.append(f"| {r['threads']} | {r['wall_ms']:.2f} | {up:.2f} | "
                     f"{r['cpu_us_per_image']:.0f} |")
    return lines + [""]


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
    ap.add_argument("--bits", type=int, nargs="+", default=[4],
                    help="ResNet20 at each; the digits CNN at the first")
    ap.add_argument("--profile", action="store_true",
                    help="per-layer CPU time of the fastest engine (where the time goes)")
    ap.add_argument("--acts", nargs="+", default=["signed", "unsigned"],
                    choices=["signed", "unsigned"],
                    help="ResNet20's activations: signed (the paper's, potlut run's default), "
                    "unsigned (--unsigned-acts, the accuracy recipe)")
    ap.add_argument("--digits-epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-ref-batch", action="store_true",
                    help="skip the (slow) batch throughput of the int64 reference")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time calls by thread CPU time, not wall clock (a loaded machine)")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.thread_time
    one_thread()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        graphs = [(f"ResNet20, {b}-bit IOS-PoT, {a} activations", "resnet20",
                   resnet_graph(b, tmp / f"r{b}{a}", act_signed=a == "signed"))
                  for b in args.bits for a in args.acts]
        graphs.append((f"SmallCNN on digits, {args.bits[0]}-bit", "small_cnn",
                       digits_graph(args.digits_epochs, args.bits[0], tmp / "digits")))
        results = [bench_model(label, name, g, args.rounds, args.batch, not args.no_ref_batch,
                               args.profile) for label, name, g in graphs]
    load1 = os.getloadavg()
    out = []
    for r in results:
        out += print_table(r, args.batch) + [""] + print_threads(r, args.batch) \
            + print_profile(r)
    out.append(f"One thread each (but the 2-thread row); {args.rounds} interleaved rounds, "
               + ("thread CPU time, " if args.cpu_time else "")
               +
               f"medians. Load average (1 min) {load0[0]:.1f} before, {load1[0]:.1f} after, "
               f"on {os.cpu_count()} cores. CPU {cpu_flags()}.")
    print("\n".join(out))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "load": [load0, load1]}, indent=2))


if __name__ == "__main__":
    main()
