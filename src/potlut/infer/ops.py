"""Integer operations of one inference (one image), per layer, for the P-LUT engine and for
the bit-shift PoT MAC scheme of prior PoT work on the same model.

P-LUT layer (IOS-PoT weights and activations): every product is one table read (the two
codes index the table; the sign is the XOR of the two sign bits, which the SIMD kernel
folds into its signed-code rows) and one add into the int32 accumulator: no multiply.
8-bit first/last layers: int8 x int8 -> int32 multiply-accumulates, counted apart.
``table_reads`` / ``int8_macs`` count every MAC (FIXOPS accounting); ``executed_reads``
counts what the kernels run: they loop over the non-zero weights only.
Per output value, as the kernels execute it (taken from the engine's layer plan, not
re-derived here): requantization ``(acc * M + B) >> R`` (a multiply, an add and a shift,
also when M is a power of two), or, where the program decides the next codes on the
accumulator (every backend runs those thresholds), only threshold compares; the residual
add, ReLU and the compares against the next quantizer's thresholds.

Bit-shift scheme (DeepShift / LogQuant style): the activation is a fixed-point integer and
each product is that integer shifted by the weight's exponent, then negated by the
weight's sign and added: one shift, one sign step and one add per product, no table.
Everything outside the products is the same as in the P-LUT engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from potlut.infer.engine import plan_layer
from potlut.infer.program import Add as AddStep
from potlut.infer.program import Layer, Pool, Program, Relu


def uses_accumulator_thresholds(st: Layer, backend: str = "c") -> bool:
    """Whether the kernels project this layer's accumulator by thresholds alone (the
    program's decision, the same on every backend)."""
    return st.acc_thr is not None


@dataclass
class LayerOps:
    """Operations of one layer for one image."""

    name: str
    mode: str  # "plut" or "int8"
    bits_w: int
    bits_a: int
    macs: int
    table_reads: int
    sign_xors: int
    accumulate_adds: int
    int8_macs: int
    executed_reads: int  # table reads / int8 MACs the kernel runs (zero weights skipped)
    requant_mults: int
    requant_adds: int
    requant_shifts: int
    compares: int
    residual_adds: int
    plut_entries: int  # stored entries (half table when symmetric)
    plut_full_entries: int  # nw * na
    plut_bytes: int  # stored table bytes
    plut_symmetric: bool
    # the bit-shift PoT MAC scheme on the same layer
    shift_shifts: int
    shift_sign_ops: int
    shift_adds: int


def layer_ops(st: Layer, backend: str = "c") -> LayerOps:
    """Counts for one layer step on ``backend`` (see the module docstring)."""
    macs, outs = st.macs, st.out_channels * st.out_hw
    plut = st.mode == "plut"
    plan = plan_layer(st)
    executed = int(plan.nz_off[-1]) * st.out_hw  # the kernels' loop over nz_k, per position
    n_thr = st.out_act.n - 1 if st.out_act is not None else 0
    if plan.acc_thr:
        sides = 2 if (st.out_act.signed and not st.relu) else 1
        mults = adds = shifts = 0
        compares = outs * n_thr * sides
    else:  # the epilogue (acc * M + B) >> R runs for every output
        mults = adds = shifts = outs
        compares = outs * (n_thr + (1 if st.relu else 0))
    t = st.plut
    return LayerOps(
        name=st.module, mode=st.mode, bits_w=st.bits_w,
        bits_a=st.act.bits, macs=macs,
        table_reads=macs if plut else 0, sign_xors=macs if plut else 0,
        accumulate_adds=macs if plut else 0, int8_macs=0 if plut else macs,
        executed_reads=executed,
        requant_mults=mults, requant_adds=adds, requant_shifts=shifts, compares=compares,
        residual_adds=outs if st.residual is not None else 0,
        plut_entries=int(t.entries.size) if t is not None else 0,
        plut_full_entries=t.nw * t.na if t is not None else 0,
        plut_bytes=t.nbytes if t is not None else 0,
        plut_symmetric=bool(t is not None and t.symmetric),
        shift_shifts=macs if plut else 0, shift_sign_ops=macs if plut else 0,
        shift_adds=macs if plut else 0,
    )


def op_counts(prog: Program, backend: str = "c") -> dict[str, Any]:
    """Per-layer and total operation counts for one image, both schemes side by side.

    ``total.table_reads`` equals the MACs of the P-LUT layers and ``total.int8_macs`` those
    of the 8-bit first/last layers (checked against ``potlut.metrics.layer_costs``); the
    requantization counts are what every backend's kernels run (``backend`` is kept for
    callers; the program, not the backend, decides where thresholds replace them).
    """
    layers = [layer_ops(st, backend) for st in prog.layers()]
    other = {"pool_adds": 0, "pool_divides": 0, "adds": 0, "relu_compares": 0}
    for st in prog.steps:
        shape = prog.shapes.get(getattr(st, "dst", ""), ())
        n = 1
        for s in shape:
            n *= s
        if isinstance(st, Pool):
            kh, kw = st.kernel
            other["pool_adds"] += n * (kh * kw - 1)
            other["pool_divides"] += n if st.kind == "avg" else 0
        elif isinstance(st, AddStep):
            other["adds"] += n
        elif isinstance(st, Relu):
            other["relu_compares"] += n
    keys = ["macs", "table_reads", "sign_xors", "accumulate_adds", "int8_macs", "executed_reads",
            "requant_mults", "requant_adds", "requant_shifts", "compares", "residual_adds",
            "plut_bytes", "plut_entries"]
    total = {k: sum(getattr(lo, k) for lo in layers) for k in keys}
    common = (total["requant_mults"], total["requant_adds"], total["requant_shifts"],
              total["compares"], total["residual_adds"])
    plut_scheme = {
        "table_reads": total["table_reads"], "sign_xors": total["sign_xors"],
        "adds": total["accumulate_adds"] + common[1] + common[4] + other["adds"]
        + other["pool_adds"],
        "shifts": common[2],
        "multiplies_low_bit_layers": sum(lo.requant_mults for lo in layers if lo.mode == "plut"),
        "int8_macs": total["int8_macs"], "requant_multiplies": common[0],
        "compares": common[3] + other["relu_compares"],
        "table_bytes": total["plut_bytes"],
    }
    shift_scheme = {
        "table_reads": 0,
        "sign_ops": sum(lo.shift_sign_ops for lo in layers),
        "adds": sum(lo.shift_adds for lo in layers) + common[1] + common[4] + other["adds"]
        + other["pool_adds"],
        "shifts": sum(lo.shift_shifts for lo in layers) + common[2],
        "multiplies_low_bit_layers": sum(lo.requant_mults for lo in layers if lo.mode == "plut"),
        "int8_macs": total["int8_macs"], "requant_multiplies": common[0],
        "compares": common[3] + other["relu_compares"],
        "table_bytes": 0,
    }
    return {
        "layers": [asdict(lo) for lo in layers],
        "total": total,
        "other": other,
        "plut": plut_scheme,
        "bit_shift": shift_scheme,
        "frac_bits": prog.frac_bits,
        "backend": backend,
    }
