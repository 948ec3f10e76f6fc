"""Lower a :class:`ModelGraph` (what a .potlut file holds) to an integer program.

The program is the integer model both runners execute: the plain int64 reference
(:mod:`potlut.infer.reference`) and the fast engine (:mod:`potlut.infer.engine`). It reads
only the graph — codebooks, codes, BatchNorm, bias — never training code.

Numbers in the program (docs in README "Integer inference"):

- **codes** feed a conv/linear layer: its input quantizer's codes. IOS-PoT codes are
  stored as a signed code ``negative << k | code`` (uint8, ``k`` magnitude-code bits);
  8-bit fixed-point codes as the signed integer ``±code`` (int16 storage, 8-bit values).
- **fixed** tensors (BatchNorm outputs, the residual stream, pooled values, logits) are
  int32 with the power-of-two scale ``2^-F`` (``F`` fractional bits, one per model:
  20, raised to at most 22 when a quantizer's smallest threshold needs more), saturated
  to ``±(2^31 - 1)``.
- A layer's accumulator is int32 in units of ``2^acc_exp``: P-LUT reads (IOS-PoT) or
  int8 x int8 products (8-bit fixed point first/last layers).
- Requantization (BatchNorm, bias, accumulator scale folded per channel, Jacob et al.
  2018): ``Y = sat(floor((acc * M + B) / 2^r))`` with an integer multiplier ``M`` (24
  significant bits, up to 31 where they hold the scale exactly) — or ``M = 2^k`` /
  ``M = 1``, a shift alone, where every scale is a power of two (layers without BatchNorm).
- Projection of a fixed tensor onto a quantizer's codes: ``code = #{j : theta_j <= |Y|}``
  with integer thresholds ``theta_j = ceil(mid_j * 2^F)`` at the midpoints of the
  codebook: nearest level, ties to the larger (METHODS §1.4); negative values keep their
  sign when the quantizer is signed, else become 0.
- A layer whose output only feeds the next layer's codes (no residual, no other reader)
  projects its accumulator directly, by per-channel integer thresholds on ``acc`` computed
  exactly (rationals) from the real affine ``y = m * acc + b`` (:class:`AccThresholds`):
  the codes of ``floor(y)`` without writing it.
- Every fixed value is the floor of its exact real value (``M`` holds a float32 scale
  exactly); the fake-quantized model's eval forward computes the same numbers
  (:mod:`potlut.nn.grid`), so both decide every code alike.
- The float input image is quantized once, by the first layer's input quantizer,
  exactly as the fake-quantized model does; everything after is integer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from potlut import schemes
from potlut.compress.graph import ModelGraph, Node
from potlut.infer.plut import (
    INT32_MAX,
    PLut,
    UnsupportedModelError,
    _code_bits,
    build_plut,
    fixed_codebook,
)

F_DEFAULT, F_MAX = 20, 22
MULT_BITS = 24  # significant bits of a requantization multiplier: a float32 scale, exactly
EXACT_MULT_BITS = 31  # ... or up to this many where that holds m exactly (fits int32)
R_MAX = 30


# ----------------------------------------------------------------- numbers


@dataclass
class ActQuant:
    """A layer's input quantizer in integer form.

    ``values[c]`` is the integer magnitude of code ``c`` in units of ``mult * 2^unit_exp``
    (``mult`` is 1 for power-of-two schemes; a real step otherwise, see
    :func:`~potlut.infer.plut.fixed_codebook`, with ``exact``/``max_err`` saying whether the
    integers are the codebook or a fixed-point rounding of it); ``mids`` the real decision
    thresholds (between consecutive codebook entries) and
    ``thresholds`` the same on fixed tensors (``ceil(mid * 2^F)``, int64).
    """

    scheme: str
    bits: int
    signed: bool
    values: np.ndarray
    unit_exp: int
    mids: np.ndarray
    thresholds: np.ndarray
    fmt: str  # "sm": uint8 signed code; "int": int16 signed value
    mult: float = 1.0
    exact: bool = True
    max_err: float = 0.0

    @property
    def n(self) -> int:
        return int(self.values.size)

    @property
    def kbits(self) -> int:
        return _code_bits(self.n)


@dataclass
class Requant:
    """Per channel ``Y = sat(floor((x * M + B) / 2^r))`` (int64 inside, int32 out)."""

    M: np.ndarray  # int64 [C]
    B: np.ndarray  # int64 [C]
    r: np.ndarray  # int64 [C]
    shift_only: bool  # every M is 1 or a power of two: no multiplier needed
    m: np.ndarray | None = None  # float64 [C]: the real ``y = m * x + b`` it rounds
    b: np.ndarray | None = None

    @property
    def channels(self) -> int:
        return int(self.M.size)


def make_requant(m: np.ndarray, b: np.ndarray) -> Requant:
    """Integer form of ``y = m * x + b`` per channel (``m``, ``b`` float64, output units).

    ``M`` keeps 24 significant bits of ``m``, so a float32 scale (times the accumulator's
    power of two) is exact, or up to 31 where those hold ``m`` exactly (a BatchNorm scale
    times two real steps of :mod:`potlut.quant.real_step`: APoT, PACT);
    ``B = floor(b * 2^r)``, so ``Y = floor(m * x + b)`` exactly
    (``floor(floor(z) / 2^r) = floor(z / 2^r)``). Floor, not nearest: the thresholds of the
    next codes lie on the grid, so ``Y >= theta`` exactly when ``m * x + b >= theta``
    (nearest put values up to half a unit below a midpoint on it, a larger code; ResNet20
    on CIFAR images), and the fake-quantized model's eval forward floors the same way
    (:mod:`potlut.nn.grid`). ``r <= 30``, ``|M| < 2^31`` and ``|b| <= 2^32`` bound every
    intermediate below 2^63 for int32 ``x``.
    """
    m = np.asarray(m, dtype=np.float64)
    b_real = np.asarray(b, dtype=np.float64)
    b = np.clip(b_real, -(2.0**32), 2.0**32)
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(b))):
        raise UnsupportedModelError("BatchNorm/bias scale is not finite")
    C = m.size
    M, B, r = np.zeros(C, np.int64), np.zeros(C, np.int64), np.zeros(C, np.int64)
    pot = bool(np.all(m > 0)) and all(math.frexp(v)[0] == 0.5 for v in m)
    for c in range(C):
        mc = float(np.clip(m[c], -(2.0**31), 2.0**31))
        if mc == 0.0:
            rc = 0
        elif pot:
            rc = min(R_MAX, max(0, -int(math.log2(mc))))
        else:
            e = math.floor(math.log2(abs(mc)))
            rc = int(np.clip(MULT_BITS - 1 - e, 0, R_MAX))
            num, den = mc.as_integer_ratio()
            r_exact = den.bit_length() - 1
            if r_exact > rc and r_exact <= R_MAX and abs(num) < 2**EXACT_MULT_BITS:
                rc = r_exact  # a real step x a BatchNorm scale (potlut.quant.real_step)
        M[c] = round(mc * 2.0**rc)
        B[c] = math.floor(float(b[c]) * 2.0**rc)
        r[c] = rc
    return Requant(M, B, r, pot, m.copy(), b_real.copy())


I32_MIN = -(2**31)


@dataclass
class AccThresholds:
    """Codes straight from a layer's int32 accumulator, per output channel ``o``.

    ``a = -acc if flip[o] else acc``; magnitude code ``#{j : a > up[o, j]} + #{j : a <=
    wn[o, j]}``, negative when the second count is > 0 (``wn`` None: nothing below zero,
    after a ReLU or for an unsigned quantizer). int32 arrays, as every kernel reads them.
    """

    flip: np.ndarray  # int32 [O]
    up: np.ndarray  # int32 [O, n - 1]
    wn: np.ndarray | None  # int32 [O, n - 1]


def _ceil(q: Fraction) -> int:
    return -((-q.numerator) // q.denominator)


def accumulator_thresholds(rq: Requant, act: ActQuant, frac_bits: int,
                           relu: bool) -> AccThresholds:
    """Exact integer thresholds on the accumulator: the codes that ``floor(y)`` (``y = m *
    acc + b``, fixed units, ``rq.m``/``rq.b``) gets from ``act.thresholds`` ``theta``.

    Positive side ``floor(y) >= theta`` is ``a > ceil((theta - b) / |m|) - 1``; negative side
    ``floor(y) <= -theta`` is ``y < 1 - theta``, ``a <= ceil((1 - theta - b) / |m|) - 1``;
    ``a = sign(m) * acc``. Computed with rationals, so the codes are those of the fixed
    tensor the requantization would write, without writing it. A threshold beyond the
    int32 range is clamped to it, which changes no decision (``|acc| <= 2^31 - 1``).
    """
    del frac_bits  # the thresholds carry it
    n_out = rq.channels
    thetas = [Fraction(int(t)) for t in act.thresholds]
    neg_side = act.signed and not relu
    flip = np.zeros(n_out, np.int32)
    up = np.zeros((n_out, len(thetas)), np.int32)
    wn = np.zeros((n_out, len(thetas)), np.int32)

    def clamp(v: int) -> int:
        return max(I32_MIN, min(INT32_MAX, v))

    for o in range(n_out):
        m, b = Fraction(float(rq.m[o])), Fraction(float(rq.b[o]))
        flip[o] = m < 0
        for j, theta in enumerate(thetas):
            if m == 0:  # y = b for every input
                up[o, j] = I32_MIN if b >= theta else INT32_MAX
                wn[o, j] = INT32_MAX if b < 1 - theta else I32_MIN
            else:
                up[o, j] = clamp(_ceil((theta - b) / abs(m)) - 1)
                wn[o, j] = clamp(_ceil((1 - theta - b) / abs(m)) - 1)
    return AccThresholds(flip, up, wn if neg_side else None)


def requant_np(x: np.ndarray, rq: Requant, axis: int = 1) -> np.ndarray:
    """Apply :class:`Requant` to int array ``x`` along channel ``axis`` (int64 result)."""
    shape = [1] * x.ndim
    shape[axis] = -1
    M, B, r = (v.reshape(shape) for v in (rq.M, rq.B, rq.r))
    y = (x.astype(np.int64) * M + B) >> r
    return np.clip(y, -INT32_MAX, INT32_MAX)


# ----------------------------------------------------------------- steps


@dataclass
class InputQuant:
    """Float image -> codes of the first layer's input quantizer."""

    src: str
    dst: str
    act: ActQuant


@dataclass
class Quantize:
    """Fixed tensor -> codes of a layer's input quantizer (thresholds)."""

    src: str
    dst: str
    act: ActQuant


@dataclass
class Layer:
    """conv2d/linear on codes -> int32 accumulator -> requant [-> + residual] [-> relu].

    Writes the fixed result to ``out_fixed`` and/or its codes for the next layer to
    ``out_codes`` (with that layer's quantizer ``out_act``).
    """

    name: str
    module: str
    op: str
    src: str
    mode: str  # "plut" or "int8"
    in_shape: tuple[int, int, int]  # (C, H, W); linear: (F, 1, 1)
    out_shape: tuple[int, ...]  # without batch
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    act: ActQuant  # quantizer of this layer's input
    w_values: np.ndarray  # int64 [nw] magnitude of each weight code
    w_codes: np.ndarray  # uint8/uint16 [O, Cg, kh, kw]
    w_negative: np.ndarray  # bool [O, Cg, kh, kw]
    acc_exp: int
    requant: Requant
    bits_w: int = 0
    plut: PLut | None = None
    residual: str | None = None
    relu: bool = False
    out_fixed: str | None = None
    out_codes: str | None = None
    out_act: ActQuant | None = None
    folded: list[str] = field(default_factory=list)  # graph nodes merged into this step
    acc_mult: float = 1.0  # accumulator unit is acc_mult * 2^acc_exp (real steps folded)
    w_exact: bool = True
    w_max_err: float = 0.0
    bitwise: bool = False  # both codebooks are scaled binary planes (infer/bitwise.py)
    acc_thr: AccThresholds | None = None  # codes straight from the accumulator (out_codes only)

    @property
    def out_channels(self) -> int:
        return int(self.w_codes.shape[0])

    @property
    def k(self) -> int:
        """Products per output value (Cin/groups * kh * kw)."""
        return int(np.prod(self.w_codes.shape[1:]))

    @property
    def out_hw(self) -> int:
        return int(np.prod(self.out_shape[1:])) if len(self.out_shape) > 1 else 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates per input image (= P-LUT reads for a P-LUT layer)."""
        return self.out_channels * self.k * self.out_hw

    def signed_weight_codes(self) -> np.ndarray:
        """``negative << k | code`` (uint8), the weights as the P-LUT kernels index them."""
        kb = _code_bits(self.w_values.size)
        return ((self.w_negative.astype(np.int64) << kb) | self.w_codes).astype(np.uint8)

    def weight_ints(self) -> np.ndarray:
        """Signed integer weight values ``±value[code]`` (int64)."""
        v = self.w_values[self.w_codes.astype(np.int64)]
        return np.where(self.w_negative, -v, v)


@dataclass
class Affine:
    """A BatchNorm that could not be folded into a layer: requant of a fixed tensor."""

    src: str
    dst: str
    requant: Requant


@dataclass
class Relu:
    src: str
    dst: str


@dataclass
class Add:
    a: str
    b: str
    dst: str


@dataclass
class Pool:
    """Average (floor division) or max pooling of a fixed NCHW tensor.

    Floor, not nearest: thresholds ``theta = mid * 2^F`` of power-of-two codebooks lie on
    the fixed-point grid, and ``floor(s / d) >= theta`` exactly when ``s / d >= theta``;
    rounding to nearest moved the decision half a unit below the midpoint (digits: 3 codes
    of the last layer's 34,560 took the larger level, 1 with floor, from the inputs' own
    rounding).
    """

    src: str
    dst: str
    kind: str  # "avg" or "max"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    divisor: int | None = None  # avg: None = kernel area


@dataclass
class Shortcut:
    """ResNet option A: ``x[:, :, ::s, ::s]`` then zero channels (pad//2 before)."""

    src: str
    dst: str
    stride: int
    pad: int


@dataclass
class Reshape:
    src: str
    dst: str
    shape: tuple[int, ...]  # without batch


@dataclass
class Cat:
    srcs: list[str]
    dst: str
    dim: int  # counts the batch axis


Step = InputQuant | Quantize | Layer | Affine | Relu | Add | Pool | Shortcut | Reshape | Cat


@dataclass
class Program:
    """The integer model: steps in order, buffers by name, logits as fixed tensors."""

    in_shape: tuple[int, ...]
    frac_bits: int  # F: fixed tensors are int32 * 2^-F
    steps: list[Step]
    outputs: list[str]
    shapes: dict[str, tuple[int, ...]]  # buffer -> shape without batch
    meta: dict[str, Any] = field(default_factory=dict)

    def layers(self) -> list[Layer]:
        return [s for s in self.steps if isinstance(s, Layer)]

    def approximations(self) -> list[dict[str, Any]]:
        """Layers whose codebooks the engine rounds to fixed point (empty: exact products).

        One entry per layer: ``{layer, weight_exact, act_exact, weight_max_err,
        act_max_err}`` with the largest absolute change of a codebook level (real units).
        """
        return [
            {"layer": st.module, "weight_exact": st.w_exact, "act_exact": st.act.exact,
             "weight_max_err": st.w_max_err, "act_max_err": st.act.max_err}
            for st in self.layers() if not (st.w_exact and st.act.exact)
        ]

    @property
    def exact(self) -> bool:
        """Whether every table holds exact products of the file's codebooks."""
        return not self.approximations()

    @property
    def scale(self) -> float:
        """Real value of one unit of a fixed tensor (``2^-F``)."""
        return 2.0**-self.frac_bits


# ----------------------------------------------------------------- lowering


def _act_quant(graph: ModelGraph, node: Node, frac_bits: int) -> ActQuant:
    act, mod = node.attrs["act"], node.attrs["module"]
    if act is None:
        raise UnsupportedModelError(f"layer {mod}: its input is not quantized; the integer "
                                    "engine needs every conv/linear input quantized")
    scheme = act["scheme"]
    cb = graph.arrays[f"{mod}.act.codebook"].astype(np.float64)
    fc = fixed_codebook(cb, scheme, f"layer {mod} activation")
    values = fc.values
    if np.any(np.diff(cb) <= 0):
        raise UnsupportedModelError(f"layer {mod}: activation codebook is not increasing")
    if cb[0] != 0:
        raise UnsupportedModelError(f"layer {mod}: activation code 0 is not zero (zero "
                                    "padding needs a zero level)")
    mids = (cb[:-1] + cb[1:]) / 2
    thr = np.minimum(np.ceil(mids * 2.0**frac_bits), 2.0**31).astype(np.int64)
    facts = schemes.lookup(scheme)
    fmt = "int" if facts is not None and facts.engine == schemes.INT8 else "sm"
    if fmt == "int" and int(values.max(initial=0)) > (127 if act["signed"] else 255):
        raise UnsupportedModelError(f"layer {mod}: fixed-point input wider than 8 bits")
    if fmt == "sm" and _code_bits(values.size) + 1 > 8:
        raise UnsupportedModelError(f"layer {mod}: {values.size} activation codes do not "
                                    "fit a signed 8-bit code")
    return ActQuant(scheme, int(act["bits"]), bool(act["signed"]), values, fc.unit_exp, mids,
                    thr, fmt, fc.mult, fc.exact, fc.max_err)


def frac_bits_for(codebooks: list[np.ndarray]) -> int:
    """F of a model whose layers' input codebooks are ``codebooks``: 20, or more (<= 22) so
    every threshold has >= 4 fractional bits below it (the fake-quantized model's eval
    forward computes the same F, :mod:`potlut.nn.grid`)."""
    need = F_DEFAULT
    for cb in codebooks:
        cb = np.asarray(cb, dtype=np.float64)
        mids = (cb[:-1] + cb[1:]) / 2
        mids = mids[mids > 0]
        if mids.size:
            need = max(need, -math.floor(math.log2(float(mids.min()))) + 4)
    return min(need, F_MAX)


def _needed_frac_bits(graph: ModelGraph) -> int:
    """F of ``graph`` (:func:`frac_bits_for` of its layers' input codebooks)."""
    return frac_bits_for([graph.arrays[f"{n.attrs['module']}.act.codebook"]
                          for n in graph.layers() if n.attrs.get("act") is not None])


def _bn_affine(graph: ModelGraph, bn: Node) -> tuple[np.ndarray, np.ndarray]:
    """The file's folded BatchNorm ``y = x * scale + shift`` as float64 ``(scale, shift)``."""
    mod = bn.attrs["module"]
    return (graph.arrays[f"{mod}.scale"].astype(np.float64),
            graph.arrays[f"{mod}.shift"].astype(np.float64))


def _layer(graph: ModelGraph, node: Node, src: str, frac_bits: int,
           bn: Node | None) -> Layer:
    a, mod = node.attrs, node.attrs["module"]
    w = a["weight"]
    if not w["quantized"]:
        raise UnsupportedModelError(f"layer {mod}: weights are not quantized")
    act = _act_quant(graph, node, frac_bits)
    wfc = fixed_codebook(graph.arrays[f"{mod}.weight.codebook"], w["scheme"],
                         f"layer {mod} weight")
    w_values, w_unit = wfc.values, wfc.unit_exp
    if _code_bits(w_values.size) + 1 > 8:
        raise UnsupportedModelError(f"layer {mod}: {w_values.size} weight codes do not fit "
                                    "a signed 8-bit code")
    codes = graph.arrays[f"{mod}.weight.codes"]
    nonzero = w_values[codes.astype(np.int64)] > 0
    neg = graph.arrays[f"{mod}.weight.negative"].astype(bool) & nonzero
    if node.op == "linear":
        codes, neg = codes[:, :, None, None], neg[:, :, None, None]
        in_shape = (int(a["in_features"]), 1, 1)
        geo = dict(kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    else:
        src_shape = graph.node(node.inputs[0]).attrs.get("shape")
        if graph.node(node.inputs[0]).op == "input":
            src_shape = list(graph.in_shape)
        in_shape = tuple(int(s) for s in src_shape)
        geo = dict(kernel=tuple(a["kernel_size"]), stride=tuple(a["stride"]),
                   padding=tuple(a["padding"]), dilation=tuple(a["dilation"]),
                   groups=int(a["groups"]))
    n_out = codes.shape[0]
    flat = codes.reshape(n_out, -1)
    if act.fmt == "sm":  # any two codebooks: a table of their integer products
        mode = "plut"
        table = build_plut(w_values, act.values, flat)
        acc_exp = w_unit + act.unit_exp + table.shift
    elif act.fmt == "int":  # 8-bit fixed-point input: integer MAC (DeepShift: 2^p weights)
        mode, table = "int8", None
        if int(w_values.max(initial=0)) > 127:
            raise UnsupportedModelError(
                f"layer {mod}: weights wider than 8 bits against a fixed-point input (largest "
                f"weight {int(w_values.max())} units; the int8 x int8 MAC path, in every "
                "backend and the generated C, stores weights as int8)")
        worst = (w_values[flat.astype(np.int64)] * int(act.values.max(initial=0))).sum(axis=1)
        if int(worst.max(initial=0)) > INT32_MAX:
            raise UnsupportedModelError(f"layer {mod}: int8 accumulator could overflow int32")
        acc_exp = w_unit + act.unit_exp
    else:
        raise UnsupportedModelError(
            f"layer {mod}: weight scheme {w['scheme']!r} with activation scheme "
            f"{act.scheme!r} is not supported")
    bias = graph.arrays[f"{mod}.bias"].astype(np.float64) if a["bias"] else np.zeros(n_out)
    g, h = _bn_affine(graph, bn) if bn is not None else (np.ones(n_out), np.zeros(n_out))
    acc_mult = wfc.mult * act.mult
    rq = make_requant(g * acc_mult * 2.0 ** (acc_exp + frac_bits),
                      (g * bias + h) * 2.0**frac_bits)
    return Layer(
        name=node.name, module=mod, op=node.op, src=src, mode=mode, in_shape=in_shape,
        out_shape=tuple(int(s) for s in a["shape"]), act=act, w_values=w_values,
        w_codes=codes, w_negative=neg, acc_exp=acc_exp, requant=rq, bits_w=int(w["bits"]),
        plut=table, acc_mult=acc_mult, w_exact=wfc.exact, w_max_err=wfc.max_err,
        bitwise=mode == "plut" and all(getattr(schemes.lookup(n), "bitwise", False)
                                       for n in (w["scheme"], act.scheme)), **geo,
    )


def _consumers(graph: ModelGraph) -> dict[str, list[Node]]:
    out: dict[str, list[Node]] = {n.name: [] for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            out[i].append(n)
    return out


def _ints2(v: Any) -> tuple[int, int]:
    return int(v[0]), int(v[1])


def _is_layer(n: Node) -> bool:
    return n.op in ("conv2d", "linear")


@dataclass
class Chain:
    """A conv/linear node and what fuses into its step: ``[batchnorm2d] -> [add] -> [relu]``,
    each the single consumer of the one before."""

    layer: Node
    end: str  # name of the last fused node: the step's output takes its name
    bn: Node | None = None
    residual: str | None = None  # the other input of a fused add
    relu: bool = False
    folded: list[str] = field(default_factory=list)  # names of the fused nodes after the layer


def fusion_chains(graph: ModelGraph, consumers: dict[str, list[Node]]) -> dict[str, Chain]:
    """``{name of the chain's last node: Chain}`` for every layer of the graph."""

    def single(node: Node) -> Node | None:
        c = consumers[node.name]
        return c[0] if len(c) == 1 else None

    chains = {}
    for n in graph.nodes:
        if not _is_layer(n):
            continue
        chain, cur = Chain(n, n.name), n
        nxt = single(cur)
        if nxt is not None and nxt.op == "batchnorm2d":
            chain.bn, cur = nxt, nxt
            chain.folded.append(nxt.name)
            nxt = single(cur)
        if nxt is not None and nxt.op == "add" and nxt.inputs[0] != nxt.inputs[1]:
            other = nxt.inputs[1] if nxt.inputs[0] == cur.name else nxt.inputs[0]
            if graph.node(other).op != "input":
                chain.residual, cur = other, nxt
                chain.folded.append(nxt.name)
                nxt = single(cur)
        if nxt is not None and nxt.op == "relu":
            chain.relu, cur = True, nxt
            chain.folded.append(nxt.name)
        chain.end = cur.name
        chains[cur.name] = chain
    return chains


class _Lowering:
    """The state of one :func:`lower` call: the graph, its consumers, fusion chains and F."""

    def __init__(self, graph: ModelGraph) -> None:
        self.graph = graph
        self.F = _needed_frac_bits(graph)
        self.consumers = _consumers(graph)
        self.chains = fusion_chains(graph, self.consumers)
        self.fused = {name for c in self.chains.values() for name in (c.layer.name, *c.folded)}
        self.shapes: dict[str, tuple[int, ...]] = {}

    def steps_of(self, n: Node) -> list[Step]:
        """The steps node ``n`` lowers to (none for nodes fused into a layer step)."""
        if n.op == "input":
            return self.input_steps(n)
        if n.op == "output" or (n.name in self.fused and n.name not in self.chains):
            return []
        if n.name in self.chains:
            return self.layer_steps(self.chains[n.name])
        return self.plain_steps(n) + self.codes_for_readers(n.name)

    def input_steps(self, n: Node) -> list[Step]:
        """The float image, quantized once by each layer that reads it."""
        self.shapes[n.name] = tuple(self.graph.in_shape)
        steps: list[Step] = []
        for c in self.consumers[n.name]:
            if not _is_layer(c):
                raise UnsupportedModelError(
                    f"node {c.name} ({c.op}) reads the float input; the integer engine "
                    "needs the input to go straight into a quantized layer")
            steps.append(InputQuant(n.name, f"{c.name}.in", _act_quant(self.graph, c, self.F)))
        return steps

    def layer_steps(self, chain: Chain) -> list[Step]:
        """One fused layer step, named after the chain's last node; it writes the first
        reading layer's codes itself, and a fixed tensor where anything else reads it."""
        lnode, end = chain.layer, self.graph.node(chain.end)
        step = _layer(self.graph, lnode, f"{lnode.name}.in", self.F, chain.bn)
        step.residual, step.relu, step.folded = chain.residual, chain.relu, chain.folded
        self.shapes[end.name] = tuple(int(s) for s in end.attrs["shape"])
        readers = [c for c in self.consumers[end.name] if _is_layer(c)]
        if readers:
            step.out_codes = f"{readers[0].name}.in"
            step.out_act = _act_quant(self.graph, readers[0], self.F)
        if not readers or any(not _is_layer(c) for c in self.consumers[end.name]):
            step.out_fixed = end.name
        if step.out_act is not None and step.out_fixed is None and step.residual is None:
            step.acc_thr = accumulator_thresholds(step.requant, step.out_act, self.F, step.relu)
        skip = readers[0].name if readers else None
        return [step, *self.codes_for_readers(end.name, skip=skip)]

    def codes_for_readers(self, name: str, skip: str | None = None) -> list[Step]:
        """A Quantize step for every layer that reads fixed tensor ``name`` (but ``skip``)."""
        return [Quantize(name, f"{c.name}.in", _act_quant(self.graph, c, self.F))
                for c in self.consumers[name] if _is_layer(c) and c.name != skip]

    def plain_steps(self, n: Node) -> list[Step]:
        """A node on the int32 fixed-point stream: BatchNorm, ReLU, add, pooling, reshape."""
        a, shp = n.attrs, tuple(int(s) for s in n.attrs["shape"])
        self.shapes[n.name] = shp
        src = n.inputs[0] if n.inputs else None
        if src is not None and self.graph.node(src).op == "input":
            raise UnsupportedModelError(f"node {n.name} ({n.op}) reads the float input")
        if n.op == "batchnorm2d":
            g, h = _bn_affine(self.graph, n)
            return [Affine(src, n.name, make_requant(g, h * 2.0**self.F))]
        if n.op == "relu":
            return [Relu(src, n.name)]
        if n.op == "add":
            return [Add(n.inputs[0], n.inputs[1], n.name)]
        if n.op == "shortcut_a":
            return [Shortcut(src, n.name, int(a["stride"]), int(a["pad"]))]
        if n.op == "flatten":
            return [Reshape(src, n.name, shp)]
        if n.op == "cat":
            return [Cat(list(n.inputs), n.name, int(a["dim"]))]
        if n.op in ("adaptive_avgpool2d", "avgpool2d", "maxpool2d", "mean"):
            return _pool_steps(n, self.shapes[src], shp)
        raise UnsupportedModelError(f"node {n.name}: op {n.op!r} is not supported by the "
                                    "integer engine")


def lower(graph: ModelGraph) -> Program:
    """The integer program of ``graph``; :class:`UnsupportedModelError` names what is not.

    Read top to bottom: check the graph, find the fusion chains (layer + BatchNorm + add +
    ReLU), then lower every node in order to its steps.
    """
    graph.validate()
    low = _Lowering(graph)
    steps = [st for n in graph.nodes for st in low.steps_of(n)]
    outs = graph.nodes[-1].inputs
    if any(graph.node(o).op == "input" for o in outs):
        raise UnsupportedModelError("the model output is its input")
    return Program(tuple(graph.in_shape), low.F, steps, list(outs), low.shapes, dict(graph.meta))


def _pool_steps(n: Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[Step]:
    a = n.attrs
    if len(in_shape) != 3:
        raise UnsupportedModelError(f"node {n.name}: pooling needs a (C, H, W) input")
    _, H, W = in_shape
    if n.op == "adaptive_avgpool2d":
        oh, ow = _ints2(a["output_size"])
        if H % oh or W % ow:
            raise UnsupportedModelError(f"node {n.name}: adaptive pooling {H}x{W} -> {oh}x{ow} "
                                        "has unequal windows")
        k = (H // oh, W // ow)
        return [Pool(n.inputs[0], n.name, "avg", k, k, (0, 0))]
    if n.op == "mean":
        dims = list(a["dims"])
        if dims != [2, 3]:
            raise UnsupportedModelError(f"node {n.name}: mean over dims {dims} (only [2, 3])")
        tmp = f"{n.name}.pool"
        return [Pool(n.inputs[0], tmp, "avg", (H, W), (H, W), (0, 0)),
                Reshape(tmp, n.name, out_shape)]
    if a["ceil_mode"]:
        raise UnsupportedModelError(f"node {n.name}: ceil_mode pooling is not supported")
    k, s, p = _ints2(a["kernel_size"]), _ints2(a["stride"]), _ints2(a["padding"])
    if n.op == "maxpool2d":
        return [Pool(n.inputs[0], n.name, "max", k, s, p, _ints2(a["dilation"]))]
    if p != (0, 0) and not a["count_include_pad"]:
        raise UnsupportedModelError(f"node {n.name}: padded average pooling with "
                                    "count_include_pad=False is not supported")
    return [Pool(n.inputs[0], n.name, "avg", k, s, p, divisor=a["divisor_override"])]
