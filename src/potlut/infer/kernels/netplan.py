"""Serialize a :class:`~potlut.infer.program.Program` into the flat plan ``plut_net.c`` runs.

The plan is one little-endian int64 array: a header, a buffer table (dtype, elements per
image, byte offset in the per-image arena), the op list and every array the ops read
(weights as per-channel lists of non-zero taps, signed-code P-LUT rows in the layouts the
SIMD kernels load, requantization constants, thresholds), addressed by word offset. The
same bytes drive the ctypes call and the stand-alone C harness (NEON under QEMU), so the
whole network runs in one native call per batch. Layout documented in ``plut_net.c``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from potlut.infer.arena import plan_arena
from potlut.infer.engine import plan_layer
from potlut.infer.plut import _code_bits
from potlut.infer.program import (
    Add,
    Affine,
    Cat,
    InputQuant,
    Layer,
    Pool,
    Program,
    Quantize,
    Relu,
    Reshape,
    Shortcut,
)

MAGIC, VERSION = 0x504C55544E4554, 1  # "PLUTNET"
HEADER_WORDS = 16
OP_INPUTQ, OP_QUANT, OP_LAYER, OP_AFFINE, OP_RELU, OP_ADD, OP_POOL, OP_SHORTCUT, OP_COPY = \
    range(1, 10)
DT_U8, DT_I16, DT_I32 = 0, 1, 2
_ITEM = {DT_U8: 1, DT_I16: 2, DT_I32: 4}
_NP = {DT_U8: np.uint8, DT_I16: np.int16, DT_I32: np.int32}
BLOCK = 256  # largest pixel block a kernel computes at once (accumulator rows are padded to it)
INT8_MAX, INT16_MAX = 127, 32767
LAYER_WORDS = 72
I32MAX = (1 << 31) - 1
CHAN_LANES = 32  # output channels per vector of the small-map kernel (int16 lanes)
GROUP_MAX = 32  # images run through a layer together when its feature map is small
GROUP_PIXELS = 512  # ... until they fill about this many accumulator positions
PLANES_L1 = 24 << 10  # ... and their input copies fit in L1 (bytes, int16 elements)
# 8-wide maps: sub-batches of 4 images with their rows interleaved (one 64-byte line of
# int16 per row of the 4 images), so a tap's row offset is a whole line (16-wide maps, 2
# images a line, measured 5 % slower: their copies did not fit L1 in chunks as large)
ILV_LINE, ILV_WIDTHS, ILV_MAX_P = 32, (8,), 4096
CHUNK_L1 = 32 << 10  # ... with input channels in chunks whose copies take at most this
# shift-add groups sum in int16 while that holds this many taps of the largest activation
# value; wider ranges (unsigned 4-bit IOS-PoT: values to 2^14, one tap) sum in int32
WIDE_RUN = 8
LINE = 64  # bytes of a cache line (and of an AVX-512 vector)


@dataclass
class Buf:
    name: str
    dtype: int
    shape: tuple[int, ...]
    offset: int = 0

    @property
    def elems(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.elems * _ITEM[self.dtype]

    @property
    def np_dtype(self) -> type:
        return _NP[self.dtype]


@dataclass
class NetPlan:
    """The serialized plan and what Python needs to read the arena back."""

    words: np.ndarray  # int64
    bufs: list[Buf]
    index: dict[str, int]  # program buffer name -> buffer id (aliases share one)
    outputs: list[int]
    arena_bytes: int  # per group of images: their buffers, then the layer scratch
    scratch_bytes: int
    layer_names: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per name (reshapes)
    op_labels: list[str] = field(default_factory=list)  # one per op: "<step> <dst>"
    group: int = 1  # images per group (a group's buffers lie image after image)
    image_bytes: int = 0  # one image's buffers


class _Writer:
    """Appends arrays to the plan (8-byte aligned) and returns their word offsets."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.size = 0  # words after the fixed part (added later)

    def add(self, a: np.ndarray) -> int:
        b = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
        pad = (-b.size) % 8
        if pad:
            b = np.concatenate([b, np.zeros(pad, np.uint8)])
        off = self.size
        self.chunks.append(b.view(np.int64))
        self.size += b.size // 8
        return off


def _code_dt(act) -> int:
    return DT_U8 if act.fmt == "sm" else DT_I16


def _widen_flags(bounds: np.ndarray, nz_off: np.ndarray, eight: bool) -> np.ndarray:
    """Per tap: bit0 = widen int8 sums to int16 after it, bit1 = widen int16 to int32.

    ``bounds[t]`` is the largest |product| of tap ``t``'s row; a run's worst sum is the sum
    of its bounds, so a widening is placed exactly where the next tap could overflow.
    """
    flags = np.zeros(bounds.size, np.uint8)
    for o in range(nz_off.size - 1):
        lo, hi = int(nz_off[o]), int(nz_off[o + 1])
        r8 = r16 = 0
        for t in range(lo, hi):
            b = int(bounds[t])
            if r16 + b > INT16_MAX:
                flags[t - 1] |= 3
                r8 = r16 = 0
            elif eight and r8 + b > INT8_MAX:
                flags[t - 1] |= 1
                r8 = 0
            r8 += b
            r16 += b
        if hi > lo:
            flags[hi - 1] = 3
    return flags


def _tile_rows(rows: np.ndarray, width: int, dtype) -> np.ndarray:
    """Rows padded to 16 entries and tiled to ``width`` (or padded when longer than 16)."""
    S, A = rows.shape
    if A <= 16:
        r = np.zeros((S, 16), np.int64)
        r[:, :A] = rows
        r = np.tile(r, (1, width // 16))
    else:
        r = np.zeros((S, max(width, A)), np.int64)
        r[:, :A] = rows
        r = r[:, :width]
    return np.ascontiguousarray(r.astype(dtype))


def _shuffle_rows(rows: np.ndarray) -> np.ndarray:
    """``[S, 64]`` bytes: each 16-entry int16 row's low bytes twice, then its high bytes."""
    S, A = rows.shape
    r = np.zeros((S, 16), np.int16)
    r[:, :min(A, 16)] = rows[:, :16].astype(np.int16)
    u = r.view(np.uint16)
    lo, hi = (u & 0xFF).astype(np.uint8), (u >> 8).astype(np.uint8)
    return np.ascontiguousarray(np.concatenate([lo, lo, hi, hi], axis=1))


def _shift_add(st: Layer, lp, code: np.ndarray, chunk: np.ndarray, n_chunks: int
               ) -> tuple[int, tuple[np.ndarray, ...]] | None:
    """Exponent-grouped form of a power-of-two-weight layer, or None where it does not apply.

    With weight values ``0`` or ``2^e`` and unrounded products (table shift 0), a channel's
    accumulator is ``sum_e 2^e (sum_{w = +2^e} a - sum_{w = -2^e} a)``: the table read
    moves to the input (each activation code becomes its signed value once per layer) and
    every tap is one int16 add or subtract; each group's sum is widened and shifted once.
    Groups are split so their sums cannot overflow. Returns the kind (1: int16 group sums,
    int32 accumulator; 2: int8 group sums, int16 accumulator; 3: int32 group sums of the
    int16 values, for wide activation ranges) and ``g_off`` [O+1],
    ``groups`` [n, 3] (end of the adds, end of the subtracts, info), the taps in that
    order, and the signed value of every activation code. Groups run from the largest
    exponent down; ``info`` = ``e | widen << 8 | d << 16 | fresh << 24``: a fresh group
    starts its sum at 0, else shifts the running int16 sum left by ``d`` (Horner) while the
    worst case still fits int16; ``widen`` adds the sum, shifted by ``e``, to the int32
    accumulator. Where the input channels are taken in ``n_chunks`` chunks (``chunk``: each
    tap's), each (output channel, chunk) has groups of its own: ``g_off`` [O * n_chunks + 1].
    """
    wv, pl = st.w_values.astype(np.int64), st.plut
    if pl is None or pl.shift != 0:
        return None
    nzv = wv[wv > 0]
    if nzv.size == 0 or np.any(nzv & (nzv - 1)):
        return None
    av = pl.a_values.astype(np.int64)
    amax = int(av.max(initial=0))
    if amax == 0 or amax > INT16_MAX:
        return None
    A = lp.rows.shape[1]
    ka = st.act.kbits
    sa = np.arange(A)
    ca = sa & ((1 << ka) - 1) if st.act.signed else sa
    neg_a = (sa >> ka) & 1 if st.act.signed else np.zeros(A, np.int64)
    avals = np.where(ca < av.size, av[np.minimum(ca, av.size - 1)], 0)
    avals = np.where(neg_a == 1, -avals, avals).astype(np.int16)
    kw = _code_bits(int(st.w_values.size))
    mag, negw = code & ((1 << kw) - 1), (code >> kw) & 1
    e = np.round(np.log2(np.maximum(wv[mag], 1))).astype(np.int64)
    # int8 group sums into an int16 accumulator where a channel's worst sum fits int16
    # (3-bit IOS-PoT: |a| <= 4, 31 taps per int8 run), else int16 group sums into int32
    worst = np.zeros(lp.nz_off.size - 1, np.int64)
    np.add.at(worst, np.repeat(np.arange(worst.size), np.diff(lp.nz_off)),
              wv[mag] * amax)
    kind = 2 if amax <= 16 and int(worst.max(initial=0)) <= INT16_MAX else 1
    if kind == 1 and INT16_MAX // amax < WIDE_RUN:
        kind = 3  # int32 sums: int16 ones would hold fewer than WIDE_RUN taps
    limit = {1: INT16_MAX, 2: INT8_MAX, 3: I32MAX}[kind] // amax
    chain_max = I32MAX if kind == 3 else INT16_MAX
    g_off, groups, order = [0], [], []
    for o, ch in np.ndindex(lp.nz_off.size - 1, n_chunks):
        lo, hi = int(lp.nz_off[o]), int(lp.nz_off[o + 1])
        ts = np.arange(lo, hi)[chunk[lo:hi] == ch]
        bound, prev = None, 0  # int16 chain (kind 1): worst |sum| in units of 2^prev
        for ex in np.unique(e[ts])[::-1]:  # largest exponent first (Horner order)
            pos = ts[(e[ts] == ex) & (negw[ts] == 0)]
            neg = ts[(e[ts] == ex) & (negw[ts] == 1)]
            taps = [(t, 0) for t in pos] + [(t, 1) for t in neg]
            for c0 in range(0, len(taps), limit):
                run = taps[c0:c0 + limit]
                order += [t for t, _ in run]
                n_pos = sum(1 for _, ng in run if ng == 0)
                d = prev - int(ex)
                grown = None if bound is None or kind == 2 else \
                    (bound << d) + len(run) * amax
                if grown is None or grown > chain_max:  # close the chain, start afresh
                    if groups and len(groups) > g_off[-1]:
                        groups[-1][2] |= 1 << 8
                    bound, info = len(run) * amax, int(ex) | 1 << 24
                else:  # shift the int16 sum down to this exponent and keep adding
                    bound, info = grown, int(ex) | d << 16
                prev = int(ex)
                groups.append([len(order) - len(run) + n_pos, len(order), info])
        if len(groups) > g_off[-1]:
            groups[-1][2] |= 1 << 8
        g_off.append(len(groups))
    return kind, (np.array(g_off, np.int32), np.array(groups, np.int32).reshape(-1, 3),
                  np.array(order, np.int32), avals)


def _out_hw(st: Layer) -> tuple[int, int]:
    """Output rows and columns of a layer (1 x 1 for a linear layer)."""
    return (st.out_shape[1], st.out_shape[2]) if len(st.out_shape) == 3 else (1, 1)


def chan_pad(st: Layer) -> tuple[int, int]:
    """Rows and columns of the zero-padded input image the small-map kernel reads: every
    input (iy, ix) at [iy + PH][ix + PW], zeros around, as far as any tap reaches."""
    _, H, W = st.in_shape
    OH, OW = _out_hw(st)
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = st.kernel, st.stride, st.padding, st.dilation
    return (max(PH + H, (OH - 1) * SH + (KH - 1) * DH + 1),
            max(PW + W, (OW - 1) * SW + (KW - 1) * DW + 1))


def _chan_taps(st: Layer, lp, sa) -> tuple[np.ndarray, ...] | None:
    """Output-channel-vector form of a P-LUT layer, for maps too small to fill vectors
    along the pixels (one image, a few positions): per block of ``32 H`` output channels
    (``H`` = 2 halves where there are more than 32, else 1), every input tap with a
    non-zero weight in the block as ``[offset, 0, 0, widen, 32 H int16 weight codes]``
    (int32 words; 31 in lanes without a weight). The kernel reads the
    zero-padded codes image (:func:`chan_pad`): tap (c, ky, kx) of output position p at
    offset + pos[p]; the activation code there selects a row of ``tab`` ([A][32] int16:
    the P-LUT's products by weight code, 0 at 31) and one vpermw per half reads its 32
    lanes' products from it (a table read, no multiply). int16 sums widen to int32 after the
    entries marked ``widen``: where the next entry's largest products could overflow some
    lane's int16 sum. Returns the block starts, the entries, H (> 0: the form applies), pos
    (padded to a multiple of 8 with zeros) and tab; None where it does not apply (taken
    where the shift-add form applies: power-of-two weights, exact products).
    """
    if sa is None or st.groups != 1:
        return None
    rows = lp.rows.astype(np.int64)  # [S, A]: product of weight code s and activation code a
    S, A = rows.shape
    if S > 31 or A > 256 or np.abs(rows).max(initial=0) > INT16_MAX:
        return None
    tab = np.zeros((A, 32), np.int16)
    tab[:, :S] = rows.T
    bnd = np.abs(rows).max(axis=1)  # largest |product| of each weight code
    wq = lp.wq.astype(np.int64)  # [O, K] signed weight codes (row indices)
    n_out, K = wq.shape
    nzm = np.zeros((n_out, K), bool)
    for o in range(n_out):
        nzm[o, lp.nz_k[lp.nz_off[o]:lp.nz_off[o + 1]]] = True
    KH, KW = st.kernel
    (SH, SW), (DH, DW) = st.stride, st.dilation
    Hp, Wp = chan_pad(st)
    OH, OW = _out_hw(st)
    kk = np.arange(K)
    off = (kk // (KH * KW)) * Hp * Wp + ((kk // KW) % KH) * DH * Wp + (kk % KW) * DW
    oy, ox = np.divmod(np.arange(OH * OW), OW)
    pos = np.zeros(-(-(OH * OW) // 8) * 8, np.int32)
    pos[:OH * OW] = oy * SH * Wp + ox * SW
    H = 2 if n_out > CHAN_LANES else 1  # 32-lane halves per block (and per entry)
    lanes_b, words = CHAN_LANES * H, 4 + 16 * H
    starts, rows_out = [0], []
    for b0 in range(0, n_out, lanes_b):
        nzb, wqb = nzm[b0:b0 + lanes_b], wq[b0:b0 + lanes_b]
        run = np.zeros(nzb.shape[0], np.int64)  # worst |int16 sum| of each lane since a widening
        for k in range(K):
            nz = nzb[:, k]
            if not nz.any():
                continue
            bound = np.where(nz, bnd[wqb[:, k]], 0)
            if np.any(run + bound > INT16_MAX):  # widen after the previous entry
                rows_out[-1][3] = 1
                run[:] = 0
            run += bound
            row = np.zeros(words, np.int64)
            row[0] = off[k]
            idx = np.full(lanes_b, 31, np.int64)
            idx[:nz.size] = np.where(nz, wqb[:, k], 31)
            row[4:] = idx.reshape(-1, 2) @ np.array([1, 1 << 16])
            rows_out.append(row)
        starts.append(len(rows_out))
    ent = np.array(rows_out, np.int64).reshape(-1, words).astype(np.uint32).view(np.int32)
    return np.array(starts, np.int32), ent, H, pos, tab


def _acc_bound(st: Layer, lp, o_of_t: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Per output channel, the largest |accumulator| any input can give: the sum of its taps'
    largest |product| (P-LUT rows; int8 layers: |weight| times the largest |input value|)."""
    if st.mode == "plut":
        per_tap = np.abs(lp.rows.astype(np.int64)).max(axis=1)[code]
    else:
        per_tap = np.abs(code.astype(np.int64)) * int(np.abs(st.act.values).max(initial=0))
    out = np.zeros(st.out_channels, np.int64)
    np.add.at(out, o_of_t, per_tap)
    return out


def _requant32(lp, acc_bound: np.ndarray, res_bound: int) -> tuple | None:
    """``(K, C, bound)`` where the requantization is ``acc * K + C`` in int32 with nothing to
    saturate, else None.

    ``(acc * M + B) >> R`` equals ``acc * K + (B >> R)`` exactly when ``M`` is ``K * 2^R``
    (power-of-two scales leave it so); if ``|acc| * |K| + |C|`` plus the residual's bound stays
    below 2^31 - 1 for every input, the clamps to +-(2^31 - 1) never act, and the runner's
    epilogue is one 32-bit multiply and add (plut_net.c out32_run) instead of 64-bit
    products and three clamps. ``bound`` bounds the output (the next residual's input)."""
    M, B, R = (np.asarray(a, np.int64) for a in (lp.M, lp.B, lp.R))
    if R.size == 0 or R.min() < 0 or R.max() > 62 or np.any(M % (np.int64(1) << R)):
        return None
    K, C = M >> R, B >> R
    bound = int((acc_bound * np.abs(K) + np.abs(C)).max()) + res_bound
    if bound >= I32MAX or int(np.abs(K).max()) > I32MAX:
        return None
    return K.astype(np.int32), C.astype(np.int32), bound


def _layer_words(st: Layer, w: _Writer, ids: dict[str, int], bufs: list[Buf],
                 phased: bool = True, fixed_bound: dict[str, int] | None = None) -> tuple:
    """The op words of one layer and its sizes (for the sub-batch and the scratch)."""
    lp = plan_layer(st)
    C, H, W = st.in_shape
    n_out, G = st.out_channels, st.groups
    (KH, KW), (SH, SW), (PH, PW), (DH, DW) = st.kernel, st.stride, st.padding, st.dilation
    OH, OW = _out_hw(st)
    # input copies: one per (kernel column, row phase) of each channel, [rows][OW] each,
    # so a tap reads its output row's run at an offset that is a whole number of rows
    Hph, Wph = OH + ((KH - 1) * DH) // SH, OW
    P = OH * Wph
    Cg = C // G
    Og = n_out // G
    K = Cg * KH * KW
    # non-zero taps: channel-local k -> its copy and the offset of its first row there
    ks = lp.nz_k.astype(np.int64)
    o_of_t = np.repeat(np.arange(n_out), np.diff(lp.nz_off))
    c = (o_of_t // Og) * Cg + ks // (KH * KW)
    i, j = (ks // KW) % KH, ks % KW
    plane = Hph * Wph
    cp = c * KW * SH + j * SH + (i * DH) % SH  # copy of the tap (a sub-batch of images each)
    pix = ((i * DH) // SH) * Wph
    code = lp.wq[o_of_t, ks].astype(np.int32)
    if st.mode == "plut":
        rows = lp.rows.astype(np.int64)
        A = rows.shape[1]
        rmax = int(np.abs(rows).max(initial=0))
        kfmt = 0 if rmax <= INT8_MAX else (1 if rmax <= INT16_MAX else 2)
        bounds = np.abs(rows).max(axis=1)[code]
        flags = _widen_flags(bounds, lp.nz_off, kfmt == 0)
        rows32 = w.add(lp.rows.astype(np.int32))
        rows8 = w.add(_tile_rows(rows if kfmt == 0 else np.zeros_like(rows), 64, np.int8))
        rows16 = w.add(_shuffle_rows(rows) if kfmt <= 1 else np.zeros((1, 64), np.uint8))
        roww = w.add(_tile_rows(rows if kfmt <= 1 else np.zeros_like(rows), 32, np.int16))
        mode = 0
    else:
        A, kfmt, mode = 0, 2, 1
        flags = np.zeros(code.size, np.uint8)
        rows32 = rows8 = rows16 = roww = w.add(np.zeros(1, np.int64))
    sa = _shift_add(st, lp, code, np.zeros_like(c), 1) if st.mode == "plut" else None
    if sa is None:
        sa_fields = [0, -1, -1, -1, -1]
    else:
        sa_fields = [sa[0], *(w.add(a) for a in sa[1])]
    # interleaved sub-batches' copies are _ilv_images times an image's: the shift-add kernels
    # take their input channels in chunks whose copies stay in L1, each (channel, chunk)
    # with groups of its own (single images keep the groups above: chunks would only add
    # groups there)
    cch, local, chunked, order_ch = C, cp, [-1, -1], None
    if sa is not None and _interleaved(OH, OW):
        per_channel = KW * SH * copy_stride(_ilv_images(OW), plane) * 2
        n_chunks = -(-C // max(1, CHUNK_L1 // per_channel))
        cch = -(-C // n_chunks)
        sa_ch = _shift_add(st, lp, code, c // cch, n_chunks)
        local = cp - (c // cch) * cch * KW * SH  # the tap's copy within its chunk
        chunked, order_ch = [w.add(sa_ch[1][0]), w.add(sa_ch[1][1])], sa_ch[1][2]
    rpl = 0 if not phased or sa is None or Wph != OW or H * W > LINE else \
        _phased_rows(sa[0], OH, OW)
    chan = _chan_taps(st, lp, sa)
    Hp, Wp = chan_pad(st)
    if chan is None:
        chan_fields = [-1, -1, 0, -1, 0, 0, -1]
    else:
        chan_fields = [w.add(chan[0]), w.add(chan[1]), chan[2], w.add(chan[3]), Hp, Wp,
                       w.add(chan[4])]
    n_thr = int(lp.thr.size)
    wn = w.add(lp.wn.astype(np.int32)) if lp.wn is not None else -1
    # the fixed output's bound (the next residual's): known where the epilogue is 32-bit
    fixed_bound = {} if fixed_bound is None else fixed_bound
    res_bound = fixed_bound.get(st.residual, I32MAX) if st.residual else 0
    rq32 = None if lp.acc_thr else _requant32(lp, _acc_bound(st, lp, o_of_t, code), res_bound)
    if st.out_fixed:
        fixed_bound[st.out_fixed] = rq32[2] if rq32 else I32MAX
    fields = [
        ids[st.src], ids.get(st.out_codes, -1) if st.out_codes else -1,
        ids[st.out_fixed] if st.out_fixed else -1, ids[st.residual] if st.residual else -1,
        C, H, W, n_out, G, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW,
        mode, kfmt, A, w.add(lp.nz_off.astype(np.int32)), w.add(pix.astype(np.int32)),
        w.add(code), w.add(flags), rows32, rows8, rows16, roww,
        w.add(lp.M), w.add(lp.B), w.add(lp.R), int(st.relu), lp.out_fmt,
        w.add(lp.thr.astype(np.int64)), n_thr, lp.kbits, int(lp.signed), int(lp.acc_thr),
        w.add(lp.flip.astype(np.int32)) if lp.acc_thr else -1,
        w.add(lp.up.astype(np.int32)) if lp.acc_thr else -1, wn if lp.acc_thr else -1,
        Hph, Wph, P, K, *sa_fields, 0, w.add(cp.astype(np.int32)), -1, -1, -1, -1,
        *chan_fields, int(_interleaved(OH, OW)), cch, *chunked, rpl,
        *((w.add(rq32[0]), w.add(rq32[1])) if rq32 else (-1, -1)),
    ]  # 52: images per sub-batch, 54-57: tap offsets (set by build_plan), 58-64: _chan_taps
    # (block starts, entries, 1, positions), chan_pad, the product table; 65: interleaved,
    # 66: input channels per chunk, 67-68: g_off and groups of the chunks, 69: phased rows,
    # 70-71: the 32-bit requantization's K and C (_requant32)
    assert len(fields) == LAYER_WORDS, len(fields)
    # single images on phased layers: a tap's row offset dr is dr whole lines
    within1, plane1 = pix, plane
    if rpl:
        within1 = ((i * DH) // SH) * rpl * Wph
        plane1 = _phased_lines(Hph, OH, rpl) * rpl * Wph
    taps = (pix.astype(np.int64), cp.astype(np.int64), local.astype(np.int64),
            None if sa is None else sa[1][2], order_ch, within1.astype(np.int64), plane1)
    chan_elems = 0 if chan is None else C * Hp * Wp
    return fields, taps, plane, P, C * KW * SH, n_out, int(pix.size), chan_elems, plane1


def _interleaved(OH: int, OW: int) -> bool:
    """Whether sub-batches of the layer interleave their images' rows (plut_net.c prep):
    on 8-wide maps a row of int16 is 16 bytes, so with one image after the other a tap's
    run starts 16 or 32 bytes into a line and two of three 64-byte loads cross a line
    (measured: 8x8 layers ~15 % slower than with aligned runs). The runner puts an
    interleaved sub-batch's accumulators back in order through a buffer of ILV_MAX_P."""
    return OW in ILV_WIDTHS and _ilv_images(OW) * OH * OW <= ILV_MAX_P


def _ilv_images(OW: int) -> int:
    """Images of an interleaved sub-batch: one 64-byte line of int16 per row."""
    return ILV_LINE // OW


def _phased_rows(kind: int, OH: int, OW: int) -> int:
    """Output rows per 64-byte line where a single image's copies take phased rows, else 0.

    On 8- and 16-wide maps a row of the shift-add values (int16, int8 for ``kind`` 2) is a
    fraction of a line, so a tap's run starts inside a line and most vector loads cross
    one. Phased, vector v of the map's V holds output rows v, v + V, v + 2V, ... (``rpl``
    of them, one line), and line k of a copy holds input rows k, k + V, ...: the run of a
    tap with row offset dr is lines dr .. dr + V - 1, every load aligned, in a copy no
    larger than before (8x8: 4 lines against 2.5 rounded up to 4). The runner puts the
    accumulators back in row order (plut_net.c unphase). Only where an input channel's codes
    fit one vector (the caller checks H * W <= 64), whose copies prep_small builds by
    permutes: built row by row, phased copies (more rows) cost more than their aligned
    loads save (16x16 layers measured 5 % slower, stride-2 layers 28 %)."""
    es = 1 if kind == 2 else 2
    if LINE % (es * OW):
        return 0
    rpl = LINE // (es * OW)
    vmax = 4 if es == 1 else 8  # vectors of the kernels' largest block (sa8_block, sa_block)
    return rpl if rpl > 1 and OH % rpl == 0 and OH // rpl <= vmax else 0


def _phased_lines(Hph: int, OH: int, rpl: int) -> int:
    """Lines of a phased copy: one per row offset a tap can have, plus the map's V - 1."""
    return Hph - OH + OH // rpl


def _tap_offsets(w: _Writer, within: np.ndarray, cp: np.ndarray, local: np.ndarray,
                 order: np.ndarray | None, order_ch: np.ndarray | None, within1: np.ndarray,
                 plane1: int, plane: int, nb: int, ilv: bool) -> list[int]:
    """Word offsets of the taps' run starts for sub-batches of ``nb`` images and of one
    (planes hold ``nb`` images each), in tap order and in shift-add order (or -1). In an
    interleaved sub-batch a row of the copies holds that row of all ``nb`` images, and the
    shift-add taps (``order_ch``) read the copies of their chunk of input channels. A single
    image's copies are ``plane1`` long with runs at ``within1`` (phased rows, or as above)."""
    out = []
    for n in (nb, 1):
        rows = within * n if ilv and n > 1 else within
        cs = copy_stride(n, plane)
        if n == 1:
            rows, cs = within1, copy_stride(1, plane1)
        pix = (cp * cs + rows).astype(np.int32)
        if order_ch is not None and n > 1:
            spix = (local * cs + rows).astype(np.int32)[order_ch]
        else:
            spix = pix[order] if order is not None else None
        out += [w.add(pix), w.add(spix) if spix is not None else -1]
    return out


def copy_stride(nb: int, plane: int) -> int:
    """Elements from one input copy of ``nb`` images to the next: rounded up to 64 (so the
    kernels' vector loads are aligned) unless the copy is shorter than a vector (as in C)."""
    n = nb * plane
    return n if n < 32 else -(-n // 64) * 64


def _layer_scratch(nb: int, plane: int, P: int, planes: int, n_out: int, T: int,
                   chan_elems: int = 0, plane1: int = 0) -> int:
    """Scratch bytes of a layer run on ``nb`` images at once (plut_net.c op_layer); the
    input copies' room also holds one padded image (``chan_elems``) for the small-map kernel
    and a single image's copies (``plane1`` each: phased rows)."""
    pst = -(-((nb - 1) * plane + P) // BLOCK) * BLOCK
    el = max(planes * copy_stride(nb, plane), planes * copy_stride(1, plane1), chan_elems)
    return _al((el + pst + 64) * 2) + _al(n_out * pst * 4) + 2 * pst * 4 + 2 * T * 4


def _al(n: int) -> int:
    return -(-n // 64) * 64


def build_plan(prog: Program, phased: bool = True, compact: bool = True) -> NetPlan:
    """The flat plan of ``prog`` (every step; reshapes alias their source buffer).

    ``phased``: single images on 8x8 maps take phased rows (``_phased_rows``; every
    instruction set runs them exactly, but only AVX-512 builds them by permutes and gains).
    ``compact``: an image's buffers share bytes where their live ranges allow
    (:func:`potlut.infer.arena.plan_arena`: ResNet20's 650 KB become 106 KB, so a
    sub-batch's buffers stay in L2); else each has its own, and all of them can be read
    back after a run (``NativeNet.run(keep=True)``)."""
    bufs: list[Buf] = []
    ids: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def new(name: str, dtype: int, shape: tuple[int, ...]) -> int:
        ids[name] = len(bufs)
        shapes[name] = tuple(int(s) for s in shape)
        bufs.append(Buf(name, dtype, tuple(int(s) for s in shape)))
        return ids[name]

    w = _Writer()
    fixed_bound: dict[str, int] = {}  # largest |value| of fixed buffers, where known
    ops: list[list[int]] = []
    names: list[str] = []
    labels: list[str] = []
    layer_geo: list[tuple[int, list[int]]] = []
    in_elems = int(np.prod(prog.in_shape))
    for st in prog.steps:
        if isinstance(st, InputQuant):
            d = new(st.dst, _code_dt(st.act), prog.in_shape)
            mids = w.add(np.asarray(st.act.mids, np.float64))
            ops.append([OP_INPUTQ, d, in_elems, mids, st.act.mids.size,
                        0 if st.act.fmt == "sm" else 1, st.act.kbits, int(st.act.signed)])
        elif isinstance(st, Quantize):
            s = ids[st.src]
            d = new(st.dst, _code_dt(st.act), shapes[st.src])
            ops.append([OP_QUANT, s, d, bufs[s].elems, w.add(st.act.thresholds.astype(np.int64)),
                        st.act.thresholds.size, 0 if st.act.fmt == "sm" else 1, st.act.kbits,
                        int(st.act.signed)])
        elif isinstance(st, Layer):
            if st.out_codes:
                new(st.out_codes, _code_dt(st.out_act), st.out_shape)
            if st.out_fixed:
                new(st.out_fixed, DT_I32, st.out_shape)
            fields, taps, *geo = _layer_words(st, w, ids, bufs, phased, fixed_bound)
            # images per sub-batch: enough to fill the vectors, few enough that the planes
            # of one sub-batch stay in L1
            nb = min(GROUP_MAX, -(-GROUP_PIXELS // geo[1]), PLANES_L1 // (geo[2] * geo[0] * 2))
            nb = max(1, nb)
            ilv = bool(fields[65])
            if ilv:
                nb = _ilv_images(st.out_shape[2])
            fields[52] = nb
            fields[54:58] = _tap_offsets(w, *taps, geo[0], nb, ilv)
            layer_geo.append((nb, geo))
            ops.append([OP_LAYER, *fields])
            names.append(st.name)
        elif isinstance(st, Affine):
            s = ids[st.src]
            shp = shapes[st.src]
            d = new(st.dst, DT_I32, shp)
            rq = st.requant
            ops.append([OP_AFFINE, s, d, shp[0], bufs[s].elems // shp[0], w.add(rq.M),
                        w.add(rq.B), w.add(rq.r)])
        elif isinstance(st, Relu):
            s = ids[st.src]
            d = new(st.dst, DT_I32, shapes[st.src])
            ops.append([OP_RELU, s, d, bufs[s].elems])
        elif isinstance(st, Add):
            a, b = ids[st.a], ids[st.b]
            d = new(st.dst, DT_I32, shapes[st.a])
            ops.append([OP_ADD, a, b, d, bufs[a].elems])
        elif isinstance(st, Pool):
            s = ids[st.src]
            C, H, W = shapes[st.src]
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = st.kernel, st.stride, st.padding, \
                st.dilation
            OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
            OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
            d = new(st.dst, DT_I32, (C, OH, OW))
            ops.append([OP_POOL, s, d, C, H, W, int(st.kind == "max"), kh, kw, sh, sw, ph, pw,
                        dh, dw, OH, OW, st.divisor or kh * kw])
        elif isinstance(st, Shortcut):
            s = ids[st.src]
            C, H, W = shapes[st.src]
            OH, OW = -(-H // st.stride), -(-W // st.stride)
            d = new(st.dst, DT_I32, (C + st.pad, OH, OW))
            ops.append([OP_SHORTCUT, s, d, C, H, W, st.stride, st.pad, OH, OW])
            if st.src in fixed_bound:  # a subsample padded with zeros
                fixed_bound[st.dst] = fixed_bound[st.src]
        elif isinstance(st, Reshape):
            ids[st.dst] = ids[st.src]
            shapes[st.dst] = tuple(int(v) for v in st.shape)
        elif isinstance(st, Cat):
            srcs = [bufs[ids[n]] for n in st.srcs]
            dim = st.dim - 1
            shp = list(srcs[0].shape)
            shp[dim] = sum(b.shape[dim] for b in srcs)
            d = new(st.dst, srcs[0].dtype, tuple(shp))
            outer = int(np.prod(shp[:dim]))
            dst_row = int(np.prod(shp[dim:])) * _ITEM[srcs[0].dtype]
            pos = 0
            for n, b in zip(st.srcs, srcs, strict=True):
                row = int(np.prod(b.shape[dim:])) * _ITEM[b.dtype]
                ops.append([OP_COPY, ids[n], d, outer, row, row, dst_row, pos])
                pos += row
        else:  # pragma: no cover - every step type is handled above
            raise TypeError(type(st).__name__)
        labels += [f"{type(st).__name__} {getattr(st, 'dst', getattr(st, 'name', ''))}"] * (
            len(ops) - len(labels))
    if compact:  # buffers whose live ranges do not overlap share bytes (every buffer is
        # written by the step that made it, so each has a live range and an offset)
        names = {n: bufs[i] for n, i in ids.items()}
        arena_plan = plan_arena(prog, {n: b.nbytes for n, b in names.items()}, set(), align=64)
        off = _al(arena_plan.bytes)  # each image of a group, and each thread's arena, aligned
        for n, b in names.items():
            b.offset = arena_plan.offset[arena_plan.group[n]]
    else:
        off = 0
        for b in bufs:
            b.offset = off
            off += _al(b.nbytes)
    # a group as large as the smallest feature map wants (1x1 maps of linear layers aside:
    # a large group spreads every buffer over more memory)
    group = max([nb for nb, geo in layer_geo if geo[1] > 1] + [1])
    scratch = max([_layer_scratch(nb, *geo) for nb, geo in layer_geo] + [0])
    arena = _al(group * off + scratch)  # a multiple of 64: the next thread's arena is aligned
    outputs = [ids[o] for o in prog.outputs]
    # assemble: header, buffer table, outputs, ops, arrays
    table = [[b.dtype, b.elems, b.offset, 0] for b in bufs]
    fixed = HEADER_WORDS + 4 * len(bufs) + len(outputs) + sum(len(o) + 1 for o in ops)
    body: list[int] = []
    for b in table:
        body += b
    body += outputs
    for o in ops:
        t, *rest = o
        rest = [v + fixed if _is_array(t, k) and v >= 0 else v for k, v in enumerate(rest)]
        body += [t, len(rest) + 2, *rest]
    header = [MAGIC, VERSION, len(bufs), len(ops), arena, group * off, in_elems, len(outputs),
              HEADER_WORDS, HEADER_WORDS + 4 * len(bufs),
              HEADER_WORDS + 4 * len(bufs) + len(outputs), fixed + w.size, 0, group, off, 0]
    words = np.concatenate([np.array(header + body, np.int64), *w.chunks]) if w.chunks else \
        np.array(header + body, np.int64)
    assert words.size == fixed + w.size
    return NetPlan(words, bufs, ids, outputs, arena, scratch, names, shapes, labels, group, off)


# which op fields (index after the op type) are array offsets, to relocate them
_ARRAYS = {
    OP_INPUTQ: {2}, OP_QUANT: {3}, OP_AFFINE: {4, 5, 6},
    OP_LAYER: {22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 35, 40, 41, 42, 48, 49, 50, 51, 53,
               54, 55, 56, 57, 58, 59, 61, 64, 67, 68, 70, 71},
}


def _is_array(op: int, k: int) -> bool:
    return k in _ARRAYS.get(op, ())


def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings counted once)."""
    import os

    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/core_id") as f:
                core = f.read().strip()
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/physical_package_id") as f:
                pkg = f.read().strip()
            cores.add((pkg, core))
        except OSError:
            cores.add(("?", str(c)))
    return max(1, len(cores))
