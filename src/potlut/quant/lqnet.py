"""LQ-Net: a learned quantizer basis ``v``, fitted by quantization error minimization (QEM).

Paper: Zhang, Yang, Ye, Hua, "LQ-Nets: Learned Quantization for Highly Accurate and
Compact Deep Neural Networks", ECCV 2018.

Follows:
- Eq. (3): a ``K``-bit value is ``v^T e`` with a basis ``v in R^K`` and an encoding
  ``e``; weights use ``e in {-1, +1}^K`` (``2^K`` levels, symmetric, no zero),
  activations ``e in {0, 1}^K``.
- Algorithm 1 (QEM), run in every training forward pass: fix ``v`` and pick each
  element's nearest level (its encoding ``B``), then ``v* = (B^T B)^-1 B^T x`` (least
  squares), and move ``v`` towards it by a running average ``v <- 0.9 v + 0.1 v*``.
  ``v`` gets no gradient; the network's loss reaches ``x`` through the STE.
- The initial basis is the uniform one ``v_i = c 2^i`` (the authors' code), here with
  ``c`` fitted to the data by QEM iterations at calibration.

Departures: one basis per tensor (the paper learns one per output channel for weights)
so that every tensor has a single small codebook for the ``.potlut`` file; the STE is
clipped to the level range (zero gradient outside ``[min level, max level]``) for
stability at low bit-widths; a signed activation (the project default, METHODS §1.3)
is a sign bit plus a ``(b-1)``-bit ``{0, 1}`` magnitude basis, ``signed=False`` is the
paper's ``b``-bit unsigned form. QEM runs only on tensors that are part of the autograd
graph in training mode, so side computations (the distribution loss, metrics) do not move
the basis.

Integer-only: no. The levels are arbitrary real combinations of the basis; the product
table of two codebooks holds real numbers, so run time needs FP32 (or a fixed-point
rounding of the table that the paper does not define).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from potlut.quant import registry
from potlut.quant.base import Exported, Quantizer
from potlut.quant.iospot import check_bits

QEM_MOMENTUM = 0.9
CALIBRATION_STEPS = 20


def encodings(k: int, binary: bool) -> torch.Tensor:
    """All ``2^k`` encodings (rows) in ``{0,1}^k`` (``binary``) or ``{-1,+1}^k``."""
    rows = torch.tensor(list(itertools.product((0.0, 1.0), repeat=k)), dtype=torch.float64)
    rows = rows.flip(1)  # column i is the bit of weight 2^i
    return rows if binary else 2 * rows - 1


class LQNetQuantizer(Quantizer):
    """LQ-Net quantizer for weights (``{-1,+1}`` basis) or activations (``{0,1}`` basis)."""

    scheme = "lqnet"

    def __init__(self, bits: int = 4, role: str = "weight", signed: bool = True) -> None:
        super().__init__(check_bits(bits, 1 if role == "weight" else 2, 8))
        self.role = role
        self.signed = signed if role != "weight" else True
        self.binary = role != "weight"
        self.k = self.bits if role == "weight" or not signed else self.bits - 1
        enc = encodings(self.k, self.binary).float()
        self.register_buffer("_enc", enc, persistent=False)
        self.register_buffer("basis", 2.0 ** torch.arange(self.k, dtype=torch.float32))

    # -- levels ----------------------------------------------------------------------------
    def _values(self, basis: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(level values ascending, their encodings) for the current basis."""
        v = self.basis if basis is None else basis
        vals = self._enc.to(v.dtype) @ v
        order = torch.argsort(vals)
        return vals[order], self._enc[order]

    def levels(self) -> torch.Tensor:
        """Values ``v^T e`` of every encoding (magnitudes for signed activations), ascending."""
        return self._values()[0].clone()

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        """What the basis approximates: ``x`` (weights, unsigned) or ``|x|`` (signed acts)."""
        if self.role == "weight":
            return x
        return x.abs() if self.signed else x

    def _nearest(self, t: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        mids = (vals[1:] + vals[:-1]) / 2
        return torch.bucketize(t.contiguous(), mids.to(t.dtype), right=True)

    # -- QEM -------------------------------------------------------------------------------
    @torch.no_grad()
    def _qem_target(self, t: torch.Tensor) -> torch.Tensor | None:
        """The least-squares basis ``v*`` for ``t`` with encodings fixed (None if singular)."""
        flat = t.detach().reshape(-1).double()
        if flat.numel() > 1 << 16:
            flat = flat[:: flat.numel() // (1 << 16)]
        vals, enc = self._values(self.basis.double())
        b = enc.double()[self._nearest(flat, vals)]
        gram = b.T @ b
        if torch.linalg.matrix_rank(gram) < self.k:
            return None
        return torch.linalg.solve(gram, b.T @ flat).abs().clamp_min(1e-8)

    @torch.no_grad()
    def qem_step(self, x: torch.Tensor, momentum: float = QEM_MOMENTUM) -> None:
        """One QEM update of the basis from ``x`` (running average with ``momentum``)."""
        v = self._qem_target(self._target(x))
        if v is not None:
            self.basis.mul_(momentum).add_((1 - momentum) * v.to(self.basis))

    @torch.no_grad()
    def calibrate_from(self, x: torch.Tensor) -> None:
        t = self._target(x.detach()).double()
        spread = float(t.abs().max()) if t.numel() else 0.0
        if not spread > 0:
            return
        top = float((2.0 ** torch.arange(self.k)).sum())
        self.basis.copy_(2.0 ** torch.arange(self.k, dtype=torch.float32) * spread / top)
        for _ in range(CALIBRATION_STEPS):
            self.qem_step(t, momentum=0.0)

    # -- forward / export ------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        if self.training and torch.is_grad_enabled() and x.requires_grad:
            self.qem_step(x)
        t = self._target(x)
        vals = self._values()[0].to(x.dtype)
        q = vals[self._nearest(t.detach(), vals)]
        inside = (t >= vals[0]) & (t <= vals[-1])
        t_ste = torch.where(inside, t, t.detach())
        q = t_ste + (q - t_ste).detach()
        if self.role != "weight" and self.signed:
            q = torch.where(x < 0, -q, q)
        return q

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        xd = x.detach().double().cpu()
        vals = self._values(self.basis.double().cpu())[0]
        q = vals[self._nearest(self._target(xd), vals)]
        if self.role != "weight" and self.signed:
            q = torch.where(xd < 0, -q, q)
        book = torch.unique(vals.abs())  # ascending magnitudes: 2^(K-1) for {-1,+1} bases
        codes = torch.bucketize(q.abs(), (book[1:] + book[:-1]) / 2, right=True)
        return Exported(
            scheme=self.scheme, bits=self.bits,
            codes=codes.numpy().astype(np.uint8), negative=(q < 0).numpy(),
            codebook=book.numpy(), exponent=None,
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, role={self.role}, signed={self.signed}, k={self.k}"


registry.register(
    "lqnet",
    lambda bits, role, signed: LQNetQuantizer(bits, role, signed),
)
