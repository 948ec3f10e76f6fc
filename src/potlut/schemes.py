"""Each quantization scheme's facts, declared once: the level set, the sign rule, whether it
is integer-only, and how the integer engine runs it.

Torch-free on purpose: the quantizers (``quant/``, torch) and the engine (``infer/``, numpy)
both read this table, so the engine decides exact / int8 / approximated / refused from a
scheme's declared facts instead of lists of names. Adding a scheme is its quantizer module
(which registers a factory under the name) plus one :class:`Scheme` entry here.

``profit`` is not a scheme: it is a way to train one (PROFIT's progressive freezing around
a base scheme), parsed into a :class:`Method` with :func:`parse_method`.
"""

from __future__ import annotations

from dataclasses import dataclass

from potlut.errors import PotlutConfigError

# how the integer engine runs a layer whose codebooks are of a scheme
EXACT = "exact"  # a P-LUT of exact integer products of the two codebooks
INT8 = "int8"  # activations enter as 8-bit fixed-point integers: int8 x int8 MAC
APPROXIMATE = "approximate"  # levels rounded to fixed point; the change is bounded and reported
REFUSED = "refused"  # no fixed integer codebook exists; the engine says why
ENGINE_MODES = (EXACT, INT8, APPROXIMATE, REFUSED)


@dataclass(frozen=True)
class Scheme:
    """The facts of one quantization scheme (one entry of :data:`SCHEMES`)."""

    name: str  # the name in configs, on the command line and in .potlut files
    label: str  # the name in tables
    paper: str  # where it comes from
    levels: str  # the level set, for people
    signs: str  # the sign rule of weights / activations
    integer_only: bool  # inference needs no float arithmetic (per the scheme's paper)
    integer_note: str  # why (not), one line for tables
    engine: str  # how the integer engine runs it: one of ENGINE_MODES
    engine_note: str = ""  # REFUSED: the reason; APPROXIMATE: what is rounded
    pot_levels: bool = False  # levels are integers times a power of two (scales are shifts)
    weight_norm: bool = False  # normalize weights per layer before quantizing (METHODS §1.1)
    dist_loss: bool = False  # its method includes the distribution loss (METHODS §2)
    aliases: tuple[str, ...] = ()  # older names still read from files
    approx_bits: int = 12  # APPROXIMATE: fixed-point bits the engine rounds levels to
    bitwise: bool = False  # levels are scaled {-1, 0, +1} planes: XNOR/AND + popcount products

    def __post_init__(self) -> None:
        assert self.engine in ENGINE_MODES, self.engine


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("iospot", "IOS-PoT", "He et al. 2024",
           levels="{0} ∪ {±2^-j}·alpha, alpha a power of two",
           signs="weights signed; activations signed, or unsigned with --unsigned-acts",
           integer_only=True, integer_note="", engine=EXACT,
           pot_levels=True, weight_norm=True, dist_loss=True),
    Scheme("fixedpoint", "Fixed point", "METHODS §1.6",
           levels="{0, 1, ..., 2^(b-1) - 1}·2^e (the 8-bit first and last layers)",
           signs="signed; unsigned activations after a ReLU",
           integer_only=True, integer_note="", engine=INT8, pot_levels=True,
           aliases=("fixed",)),
    Scheme("apot", "APoT", "Li et al. 2020",
           levels="sums of powers of two times a learned real clipping scale",
           signs="weights signed; activations as the spec says", integer_only=True,
           integer_note="real clipping scale: integer requantization multiplier, not a shift",
           engine=EXACT, weight_norm=True),
    Scheme("lqnet", "LQ-Net", "Zhang et al. 2018",
           levels="real combinations of a learned basis, one per output channel (weights)",
           signs="signed weights", integer_only=False,
           integer_note="levels are real combinations of a learned basis per output channel "
                        "(FP32 table)",
           engine=APPROXIMATE,
           engine_note="levels rounded to 12-bit fixed point; the weight codebook is every "
                       "channel's levels together, refused past 128 magnitudes (8-bit codes)"),
    Scheme("lqnet_layer", "LQ-Net (basis per layer)", "Zhang et al. 2018, one weight basis "
           "per tensor", levels="real combinations of a learned basis (one per tensor)",
           signs="signed weights", integer_only=False,
           integer_note="levels are real combinations of a learned basis (FP32 table)",
           engine=APPROXIMATE, engine_note="levels rounded to 12-bit fixed point"),
    Scheme("deepshift", "DeepShift-Q", "Elhoushi et al. 2021 (DeepShift-Q)",
           levels="weights ±2^p; activations 8-bit fixed point", signs="weights signed",
           integer_only=True,
           integer_note="weights ±2^p (shift), activations 8-bit fixed point",
           engine=INT8, pot_levels=True),
    Scheme("pact", "PACT", "Choi et al. 2018",
           levels="uniform 0..alpha (activations), DoReFa uniform weights",
           signs="weights signed", integer_only=True,
           integer_note="real step alpha/m: integer requantization multiplier, not a shift",
           engine=EXACT),
    Scheme("lsq", "LSQ+", "Bhalgat et al. 2020",
           levels="s·c + beta with learned step s and offset beta", signs="signed weights",
           integer_only=False, integer_note="real step s and FP32 offset beta at run time",
           engine=REFUSED,
           engine_note="LSQ+ activations add a real offset beta to every code (s*c + beta, "
                       "possibly negative): zero padding and products are not integers of one "
                       "codebook"),
    Scheme("bmfloat", "BM-float", "Fox et al. 2021",
           levels="block minifloat: shared exponent per block", signs="signed",
           integer_only=False,
           integer_note="per-block exponents from the data at run time, float elements",
           engine=REFUSED,
           engine_note="BM-float shares an exponent per block computed from the data at run "
                       "time: there is no fixed codebook to tabulate"),
    Scheme("ls1", "LS-1", "Pouransari et al. 2020",
           levels="weights ±alpha, alpha = mean|x|; activations {0, ±alpha}",
           signs="weights signed; activations as the spec says", integer_only=True,
           integer_note="one real scale per tensor (requantization multiplier); products by "
                        "XNOR + popcount", engine=EXACT, bitwise=True),
    Scheme("ls2", "LS-2", "Pouransari et al. 2020",
           levels="±(v1 ± v2), the exact least-squares two-level split of |x| (+ 0 for "
                  "activations)",
           signs="weights signed; activations as the spec says", integer_only=False,
           integer_note="two real scales v1, v2 per tensor: integer products only where "
                        "(v1 - v2) / (v1 + v2) is a small fraction, else rounded",
           engine=APPROXIMATE, engine_note="levels rounded to 8-bit fixed point",
           approx_bits=8, bitwise=True),
    Scheme("lst", "LS-T", "Pouransari et al. 2020",
           levels="{0, ±alpha} with the least-squares optimal threshold",
           signs="weights signed; activations as the spec says", integer_only=True,
           integer_note="one real scale per tensor (requantization multiplier); products by "
                        "AND/XNOR + popcount", engine=EXACT, bitwise=True),
    Scheme("alq", "ALQ", "Qu et al. 2020",
           levels="per group of 64 weights: sums of I_g scaled binary bases, I_g chosen by "
                  "the loss (0 allowed); activations b-bit fixed point",
           signs="weights signed", integer_only=False,
           integer_note="a real basis per group of 64 weights",
           engine=REFUSED,
           engine_note="ALQ gives every group of 64 weights its own real basis: there is no "
                       "per-tensor codebook to tabulate"),
    Scheme("sq", "SQ", "Dong et al. 2017",
           levels="ternary {0, ±alpha} weights on a growing random ratio of the filters "
                  "(50 % -> 100 %); activations b-bit fixed point",
           signs="weights signed", integer_only=True,
           integer_note="ternary weights (one real scale) x fixed-point activations",
           engine=INT8),
    Scheme("esb", "ESB", "Gong et al. 2021",
           levels="{0} ∪ 2^-e (1 + m/2) (2 significant bits) times a DDA-aligned scale",
           signs="weights signed; activations as the spec says", integer_only=True,
           integer_note="2 significant bits: a product is at most 2 shift-adds; real scale "
                        "in the requantization multiplier", engine=EXACT),
    Scheme("srq", "SRQ + DropBits", "Lee et al. 2021",
           levels="uniform grid s·{-2^(b-1)..2^(b-1)-1} with a learned step s and a learned "
                  "per-layer bit-width",
           signs="weights signed; activations as the spec says", integer_only=True,
           integer_note="uniform codes, real step s: integer requantization multiplier",
           engine=EXACT),
)}
_ALIASES = {a: s for s in SCHEMES.values() for a in s.aliases}


def lookup(name: str) -> Scheme | None:
    """The facts of ``name`` (or of the scheme it is an older name of); None if unknown."""
    return SCHEMES.get(name) or _ALIASES.get(name)


def get(name: str) -> Scheme:
    """The facts of ``name``; an unknown name is a user error listing the known ones."""
    s = lookup(name)
    if s is None:
        raise PotlutConfigError(f"unknown quantization scheme {name!r}; choose one of: "
                                f"{', '.join(sorted(SCHEMES))}")
    return s


PROFIT = "profit"


@dataclass(frozen=True)
class Method:
    """A scheme and how it is trained: plain QAT, or the progressive freezing of PROFIT
    (Park & Yoo 2020) around it. Written ``profit`` / ``profit:SCHEME`` on the command line;
    labelled "SCHEME + progressive freezing", since PROFIT's other parts are not built
    (quant/profit.py)."""

    scheme: Scheme
    profit: bool = False

    @property
    def label(self) -> str:
        return f"{self.scheme.label} + progressive freezing" if self.profit else self.scheme.label


def parse_method(text: str) -> Method:
    """``"apot"`` -> APoT; ``"profit"`` -> PROFIT on IOS-PoT; ``"profit:lsq"`` -> on LSQ+."""
    head, colon, base = text.partition(":")
    if head == PROFIT:
        return Method(get(base or "iospot"), profit=True)
    if colon:
        raise PotlutConfigError(f"scheme {text!r}: only profit takes a base (profit:SCHEME)")
    return Method(get(text))
