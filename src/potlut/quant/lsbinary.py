"""Least-squares binary quantization: LS-1, LS-2 and LS-T (schemes ``ls1``, ``ls2``, ``lst``).

Paper: Pouransari, Tu, Tuzel, "Least Squares Binary Quantization of Neural Networks",
CVPR Workshops 2020.

Follows:
- LS-1 (Sec. 3.1): ``x ~ alpha * sign(x)`` with the least-squares scale ``alpha = mean|x|``.
- LS-2 (Sec. 3.2): ``x ~ v1 b1 + v2 b2`` with ``b1, b2 in {-1, +1}``: every element's
  magnitude is ``v1 - v2`` or ``v1 + v2``, so the least-squares optimum is the best split of
  the sorted ``|x|`` into a lower and an upper group, each represented by its mean; all
  ``n - 1`` splits are checked exactly with prefix sums (:func:`ls2_fit`).
- LS-T (Sec. 3.3): ternary ``x ~ alpha * t``, ``t in {-1, 0, +1}``: for the ``k`` largest
  ``|x|`` kept, ``alpha = mean`` of them and the error falls by ``S_k^2 / k``; the optimal
  threshold is the ``k`` that maximizes it, found exactly over sorted ``|x|`` (:func:`lst_fit`).
- Weights are refitted in every forward pass from the current weights (the paper's
  on-the-fly optimal scalars); the gradient is the straight-through estimator.

Departures: one set of scalars per tensor (the paper fits weights per output channel) so a
tensor has one small codebook in the ``.potlut`` file. Activations always keep a zero level
(ReLU zeros and zero padding are exact, and the integer engine needs code 0 to be zero):
LS-1 activations are ``{0, ±alpha}`` with ``alpha`` the mean of the non-zero ``|x|``, LS-2
activations ``{0} ∪ ±{v1 - v2, v1 + v2}`` fitted on the non-zero ``|x|``, LS-T activations
the optimal ternary of all ``|x|``; they take the nearest level (what the integer engine
does), and their scalars are a running average (momentum 0.9) of per-batch fits in
training, fixed in evaluation. The STE is clipped to ``|x| <= largest level``.

Integer-only: LS-1 and LS-T yes: one real scale per tensor, folded into the requantization
multiplier; products are XNOR/AND + popcount (:mod:`potlut.infer.bitwise`). LS-2 no: its
two real scales ``v1, v2`` need a fixed-point rounding (8 bits in the engine).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from potlut.quant import registry
from potlut.quant.base import Exported, Quantizer

MOMENTUM = 0.9
FIT_SAMPLE = 1 << 16  # activations: at most this many elements per fit (strided)
KINDS = ("ls1", "ls2", "lst")


def ls1_fit(t: torch.Tensor) -> torch.Tensor:
    """LS-1 magnitude: ``[mean t]`` (``t`` = the magnitudes ``|x|``)."""
    t = t.reshape(-1).double()
    return t.mean().reshape(1) if t.numel() else torch.zeros(1, dtype=torch.float64)


def ls2_fit(t: torch.Tensor) -> torch.Tensor:
    """LS-2 magnitudes ``[v1 - v2, v1 + v2]``: the exact least-squares two-level split of ``t``.

    Over ``t`` sorted ascending, the split after position ``i`` costs
    ``sum t^2 - S_lo^2 / i - S_hi^2 / (n - i)``; the best ``i`` gives the two group means.
    """
    s = torch.sort(t.reshape(-1).double()).values
    n = s.numel()
    if n < 2:
        v = s.mean() if n else torch.zeros((), dtype=torch.float64)
        return torch.stack([v, v])
    c = torch.cumsum(s, 0)
    i = torch.arange(1, n, dtype=torch.float64)
    lo, hi = c[:-1], c[-1] - c[:-1]
    gain = lo**2 / i + hi**2 / (n - i)  # maximizing it minimizes the squared error
    k = int(torch.argmax(gain)) + 1
    return torch.stack([c[k - 1] / k, (c[-1] - c[k - 1]) / (n - k)])


def lst_fit(t: torch.Tensor) -> tuple[float, float]:
    """LS-T ``(alpha, threshold)``: keep the ``k`` largest ``t`` maximizing ``S_k^2 / k``.

    ``alpha = S_k / k``; the threshold is the midpoint between the ``k``-th and ``k+1``-th
    largest magnitudes (elements above it are ``±alpha``, the rest 0).
    """
    s = torch.sort(t.reshape(-1).double(), descending=True).values
    n = s.numel()
    if n == 0 or float(s[0]) <= 0:
        return 0.0, 0.0
    c = torch.cumsum(s, 0)
    k = int(torch.argmax(c**2 / torch.arange(1, n + 1, dtype=torch.float64))) + 1
    alpha = float(c[k - 1]) / k
    thr = 0.0 if k == n else (float(s[k - 1]) + float(s[k])) / 2
    return alpha, thr


def _nearest(t: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Index of the nearest magnitude in ascending ``book`` (ties to the larger)."""
    mids = (book[1:] + book[:-1]) / 2
    return torch.bucketize(t.contiguous(), mids.to(t.dtype), right=True)


class LSQuantizer(Quantizer):
    """LS-1 / LS-2 / LS-T quantizer of a weight or an activation tensor."""

    def __init__(self, kind: str, role: str = "weight", signed: bool = True) -> None:
        assert kind in KINDS, kind
        signed = True if role == "weight" else bool(signed)
        has_zero = kind == "lst" or role != "weight"
        n_mag = {"ls1": 1, "ls2": 2, "lst": 1}[kind] + has_zero
        levels = (2 * n_mag - has_zero) if signed else n_mag
        super().__init__(max(1, math.ceil(math.log2(levels))))
        self.kind, self.role, self.signed = kind, role, signed
        self.scheme = kind
        self.register_buffer("book", torch.zeros(n_mag))  # magnitudes, ascending
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    # -- fitting ---------------------------------------------------------------------------
    def _magnitudes(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs() if self.signed else x.clamp_min(0)

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> tuple[torch.Tensor, float | None]:
        """The least-squares codebook of ``x`` (ascending magnitudes) and, for LS-T weights,
        the optimal threshold (None: nearest level)."""
        t = self._magnitudes(x.detach()).reshape(-1)
        if self.role != "weight" and t.numel() > FIT_SAMPLE:
            t = t[:: t.numel() // FIT_SAMPLE]
        if self.kind == "lst":
            alpha, thr = lst_fit(t)
            book = torch.tensor([0.0, alpha], dtype=torch.float64)
            return book, (thr if self.role == "weight" else None)
        if self.role != "weight":
            t = t[t > 0]
        fitted = ls1_fit(t) if self.kind == "ls1" else ls2_fit(t)
        if self.role != "weight":
            fitted = torch.cat([torch.zeros(1, dtype=torch.float64), fitted])
        return fitted, None

    def levels(self) -> torch.Tensor:
        """The current magnitude codebook (ascending; 0 first where the scheme has zero)."""
        return self.book.clone()

    @torch.no_grad()
    def calibrate_from(self, x: torch.Tensor) -> None:
        book, _ = self.fit(x)
        self.book.copy_(book.to(self.book))
        self.fitted.fill_(True)

    # -- forward / export ------------------------------------------------------------------
    def _codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, codebook) of ``x`` as the forward pass and the export both use them."""
        if self.role == "weight":
            book, thr = self.fit(x)
        else:
            book, thr = self.book.double(), None
        t = self._magnitudes(x.detach()).double()
        if thr is not None:  # LS-T weights: the exact optimal threshold
            codes = (t > thr).long()
        else:
            codes = _nearest(t, book)
        return codes, book

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        if self.role != "weight" and self.training and torch.is_grad_enabled():
            book, _ = self.fit(x)
            if bool(self.fitted):
                self.book.mul_(MOMENTUM).add_((1 - MOMENTUM) * book.to(self.book))
            else:
                self.book.copy_(book.to(self.book))
                self.fitted.fill_(True)
        codes, book = self._codes(x)
        mag = book.to(x.dtype)[codes]
        q = torch.where(x < 0, -mag, mag) if self.signed else mag
        t = self._magnitudes(x)
        inside = t <= book[-1].to(x.dtype)
        ste = torch.where(inside, x, x.detach())
        return q.detach() + (ste - ste.detach())  # exactly q forward (the file stores it)

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        xd = x.detach().double().cpu()
        codes, book = self._codes(xd)
        neg = (xd < 0) & (book[codes] > 0) if self.signed else torch.zeros_like(xd, dtype=bool)
        return Exported(scheme=self.scheme, bits=self.bits,
                        codes=codes.numpy().astype(np.uint8), negative=neg.numpy(),
                        codebook=book.float().double().numpy(), exponent=None)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, role={self.role}, signed={self.signed}, bits={self.bits}"


def _factory(kind: str):
    return lambda bits, role, signed: LSQuantizer(kind, role, signed)


for _kind in KINDS:
    registry.register(_kind, _factory(_kind))
