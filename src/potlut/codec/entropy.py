"""Adaptive context-model coding of the codec's binary codes (binary rANS, numba).

potlut.compress.rans is a static coder: one frequency table per layer, sent up front. The
codec's bits need probabilities that adapt as they are coded and that depend on bits
already decoded (a context model), so this module keeps a small binary rANS of its own.
It runs in two passes: the encoder first walks the bits forward, computing each bit's
probability exactly as the decoder will, then rANS-codes them backwards; the decoder
walks forward once. Probabilities are 16-bit, each context mixing a fast and a slow
adaptive estimate, clamped to [1/2048, 1 - 1/2048].

Contexts of a code bit (iteration t, tile y, x, channel c; coded t, y, x, c order):
channel c, and the bit of the same channel at iteration t - 1, at the left tile and at
the tile above (each: absent, -1 or +1). A tile with count n has bits at iterations
0 .. n-1 only. Per-tile counts are coded in unary with contexts (position k, is the left
/ upper count above k).

Every iteration is its own rANS chunk while the model state runs on, so the first k
chunks decode without the rest: the stream stays progressive.
"""

from __future__ import annotations

import numba
import numpy as np

from potlut.errors import PotlutFormatError

RANS_L = 1 << 23
SCALE = 16
ONE = 1 << SCALE
P_MIN, P_MAX = 32, ONE - 32
FAST, SLOW = 4, 7
COUNT_CTX = 16 * 9


def n_code_contexts(bits: int) -> int:
    return bits * 27


def new_model(n_ctx: int) -> np.ndarray:
    """Fresh model state: two 16-bit estimates of P(bit = 1) per context, both 1/2."""
    return np.full((n_ctx, 2), ONE // 2, np.int64)


@numba.njit(cache=True)
def _p1(model, ctx):  # pragma: no cover - numba
    p = (model[ctx, 0] + model[ctx, 1]) >> 1
    return min(max(p, P_MIN), P_MAX)


@numba.njit(cache=True)
def _update(model, ctx, bit):  # pragma: no cover - numba
    target = ONE if bit else 0
    model[ctx, 0] += (target - model[ctx, 0]) >> FAST
    model[ctx, 1] += (target - model[ctx, 1]) >> SLOW


@numba.njit(cache=True)
def _state(v):  # pragma: no cover - numba
    return 1 if v > 0 else 2


@numba.njit(cache=True)
def _code_ctx(codes, counts, t, c, y, x):  # pragma: no cover - numba
    prev = 0 if t == 0 else _state(codes[t - 1, c, y, x])
    left = 0 if x == 0 or counts[y, x - 1] <= t else _state(codes[t, c, y, x - 1])
    up = 0 if y == 0 or counts[y - 1, x] <= t else _state(codes[t, c, y - 1, x])
    return ((c * 3 + prev) * 3 + left) * 3 + up


@numba.njit(cache=True)
def _count_ctx(counts, y, x, k):  # pragma: no cover - numba
    left = 0 if x == 0 else (1 if counts[y, x - 1] - 1 > k else 2)
    up = 0 if y == 0 else (1 if counts[y - 1, x] - 1 > k else 2)
    return (min(k, 15) * 3 + left) * 3 + up


@numba.njit(cache=True)
def _plane_symbols(codes, counts, t, model, bits, probs):  # pragma: no cover - numba
    """Fill ``bits``/``probs`` with iteration t's bits and their probabilities; count."""
    n = 0
    _, nc, h, w = codes.shape
    for y in range(h):
        for x in range(w):
            if counts[y, x] <= t:
                continue
            for c in range(nc):
                ctx = _code_ctx(codes, counts, t, c, y, x)
                b = 1 if codes[t, c, y, x] > 0 else 0
                bits[n] = b
                probs[n] = _p1(model, ctx)
                _update(model, ctx, b)
                n += 1
    return n


@numba.njit(cache=True)
def _count_symbols(counts, top, model, bits, probs):  # pragma: no cover - numba
    n = 0
    h, w = counts.shape
    for y in range(h):
        for x in range(w):
            v = counts[y, x] - 1
            for k in range(top - 1):
                ctx = _count_ctx(counts, y, x, k)
                b = 1 if v > k else 0
                bits[n] = b
                probs[n] = _p1(model, ctx)
                _update(model, ctx, b)
                n += 1
                if b == 0:
                    break
    return n


@numba.njit(cache=True)
def _rans_encode(bits, probs, n):  # pragma: no cover - numba
    cap = 2 * n + 8
    out = np.empty(cap, np.uint8)
    pos = cap
    x = np.uint64(RANS_L)
    for i in range(n - 1, -1, -1):
        p = np.uint64(probs[i])
        if bits[i]:
            f, s = p, np.uint64(0)
        else:
            f, s = np.uint64(ONE) - p, p
        x_max = np.uint64((RANS_L >> SCALE) << 8) * f
        while x >= x_max:
            pos -= 1
            out[pos] = np.uint8(x & np.uint64(0xFF))
            x >>= np.uint64(8)
        x = ((x // f) << np.uint64(SCALE)) + (x % f) + s
    for _ in range(4):
        pos -= 1
        out[pos] = np.uint8((x >> np.uint64(24)) & np.uint64(0xFF))
        x = (x << np.uint64(8)) & np.uint64(0xFFFFFFFF)
    return out[pos:].copy()


@numba.njit(cache=True)
def _rans_start(stream):  # pragma: no cover - numba
    if stream.size < 4:
        return np.uint64(0), -1
    x = (np.uint64(stream[0]) | (np.uint64(stream[1]) << np.uint64(8))
         | (np.uint64(stream[2]) << np.uint64(16)) | (np.uint64(stream[3]) << np.uint64(24)))
    if x < np.uint64(RANS_L) or x >= np.uint64(RANS_L) << np.uint64(8):
        return x, -2
    return x, 4


@numba.njit(cache=True)
def _rans_bit(stream, st, p):  # pragma: no cover - numba
    """Decode one bit with P(1) = p/2^16; ``st`` = [x, pos]; returns the bit or -1."""
    x = np.uint64(st[0])
    slot = x & np.uint64(ONE - 1)
    pp = np.uint64(p)
    if slot < pp:
        b, f, s = 1, pp, np.uint64(0)
    else:
        b, f, s = 0, np.uint64(ONE) - pp, pp
    x = f * (x >> np.uint64(SCALE)) + slot - s
    while x < np.uint64(RANS_L):
        if st[1] >= stream.size:
            return -1
        x = (x << np.uint64(8)) | np.uint64(stream[st[1]])
        st[1] += 1
    st[0] = x
    return b


@numba.njit(cache=True)
def _rans_end(stream, st):  # pragma: no cover - numba
    if st[1] != stream.size:
        return -3
    if np.uint64(st[0]) != np.uint64(RANS_L):
        return -4
    return 0


@numba.njit(cache=True)
def _decode_plane(stream, codes, counts, t, model):  # pragma: no cover - numba
    x, pos = _rans_start(stream)
    if pos < 0:
        return pos
    st = np.empty(2, np.uint64)
    st[0], st[1] = x, pos
    _, nc, h, w = codes.shape
    for y in range(h):
        for xx in range(w):
            if counts[y, xx] <= t:
                continue
            for c in range(nc):
                ctx = _code_ctx(codes, counts, t, c, y, xx)
                b = _rans_bit(stream, st, _p1(model, ctx))
                if b < 0:
                    return -1
                codes[t, c, y, xx] = 1 if b else -1
                _update(model, ctx, b)
    return _rans_end(stream, st)


@numba.njit(cache=True)
def _decode_counts(stream, counts, top, model):  # pragma: no cover - numba
    x, pos = _rans_start(stream)
    if pos < 0:
        return pos
    st = np.empty(2, np.uint64)
    st[0], st[1] = x, pos
    h, w = counts.shape
    for y in range(h):
        for xx in range(w):
            v = 0
            for k in range(top - 1):
                ctx = _count_ctx(counts, y, xx, k)
                b = _rans_bit(stream, st, _p1(model, ctx))
                if b < 0:
                    return -1
                _update(model, ctx, b)
                if b == 0:
                    break
                v += 1
            counts[y, xx] = v + 1
    return _rans_end(stream, st)


_ERRORS = {
    -1: "ends before its declared bits",
    -2: "starts with an rANS state outside its range",
    -3: "has bytes left over after its declared bits",
    -4: "ends in an rANS state mismatch (corrupt)",
}


def _model_bits(probs: np.ndarray, bits: np.ndarray) -> float:
    p = probs.astype(np.float64) / ONE
    return float(-np.where(bits == 1, np.log2(p), np.log2(1 - p)).sum())


def encode_counts(counts: np.ndarray, top: int) -> tuple[bytes, float]:
    """rANS chunk of per-tile counts in 1..``top``, and its model's entropy in bits."""
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    cap = counts.size * max(top - 1, 1)
    bits, probs = np.empty(cap, np.int64), np.empty(cap, np.int64)
    n = _count_symbols(counts, top, new_model(COUNT_CTX), bits, probs)
    return _rans_encode(bits, probs, n).tobytes(), _model_bits(probs[:n], bits[:n])


def decode_counts(chunk: bytes, shape: tuple[int, int], top: int) -> np.ndarray:
    """Inverse of :func:`encode_counts`; malformed chunks are a :class:`PotlutFormatError`."""
    counts = np.zeros(shape, np.int64)
    err = _decode_counts(np.frombuffer(chunk, np.uint8), counts, top, new_model(COUNT_CTX))
    if err:
        raise PotlutFormatError(f"tile-count chunk {_ERRORS[err]}")
    return counts


def encode_codes(codes: np.ndarray, counts: np.ndarray) -> tuple[list[bytes], list[float]]:
    """One rANS chunk per iteration of ``codes`` (T x C x h x w, values -1/+1 where the
    tile is active) and each chunk's model entropy in bits."""
    codes = np.ascontiguousarray(codes, dtype=np.int8)
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    t_n, nc = codes.shape[:2]
    model = new_model(n_code_contexts(nc))
    cap = codes[0].size
    bits, probs = np.empty(cap, np.int64), np.empty(cap, np.int64)
    chunks, entropy = [], []
    for t in range(t_n):
        n = _plane_symbols(codes, counts, t, model, bits, probs)
        chunks.append(_rans_encode(bits, probs, n).tobytes())
        entropy.append(_model_bits(probs[:n], bits[:n]))
    return chunks, entropy


def decode_codes(chunks: list[bytes], counts: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of :func:`encode_codes` for the first ``len(chunks)`` iterations; inactive
    tiles' codes are 0."""
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    codes = np.zeros((len(chunks), channels, *counts.shape), np.int8)
    model = new_model(n_code_contexts(channels))
    for t, chunk in enumerate(chunks):
        err = _decode_plane(np.frombuffer(chunk, np.uint8), codes, counts, t, model)
        if err:
            raise PotlutFormatError(f"code chunk of iteration {t + 1} {_ERRORS[err]}")
    return codes
