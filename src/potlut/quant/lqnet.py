"""LQ-Net: a learned quantizer basis ``v``, fitted by quantization error minimization (QEM).

Paper: Zhang, Yang, Ye, Hua, "LQ-Nets: Learned Quantization for Highly Accurate and
Compact Deep Neural Networks", ECCV 2018.

Follows:
- Eq. (3): a ``K``-bit value is ``v^T e`` with a basis ``v in R^K`` and an encoding
  ``e``; weights use ``e in {-1, +1}^K`` (``2^K`` levels, symmetric, no zero),
  activations ``e in {0, 1}^K``.
- Weights: one basis per output channel (``basis`` is ``[C_out, K]``, the authors'
  ``[nbit, num_filters]``); activations: one basis per layer.
- Algorithm 1 (QEM), run in every training forward pass: fix ``v`` and pick each
  element's nearest level (its encoding ``B``), then ``v* = (B^T B)^-1 B^T x`` (least
  squares; for weights with the authors' ridge ``(B^T B + eps I)^-1 (B^T x + eps v)``),
  and move ``v`` towards it by a running average ``v <- 0.9 v + 0.1 v*``. ``v`` gets no
  gradient; the network's loss reaches ``x`` through the STE.
- Gradients as the authors' code: weights the plain STE (``dy/dx = 1`` everywhere);
  activations the STE of ``min(x, top level)`` (zero gradient above the top level).
- The initial basis is the uniform one ``v_i = c 2^i`` (the authors' code), here with
  ``c`` fitted to the data (per channel for weights) by QEM iterations at calibration.

Departures: a signed activation (the project default, METHODS §1.3) is a sign bit plus a
``(b-1)``-bit ``{0, 1}`` magnitude basis, ``signed=False`` is the paper's ``b``-bit
unsigned form; the fitted basis is kept positive (``|v*|``). QEM runs only on tensors that
are part of the autograd graph in training mode, so side computations (the distribution
loss, metrics) do not move the basis. The ``.potlut`` file stores one codebook per
tensor: for weights it is the union of every channel's level magnitudes (up to
``C_out * 2^(K-1)`` entries, 16-bit codes past 256), which the file's entropy coding pays
for (the analytic weight size charges the basis, ``side_bits``), and which the integer
engine (8-bit codes) runs only up to 128 magnitudes. ``lqnet_layer`` is the same with one
weight basis per tensor (the form this project used before, and the one the engine runs).

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
QEM_EPS = 1e-4  # the authors' ridge on the weights' per-channel least squares
CALIBRATION_STEPS = 20
SAMPLE = 1 << 16  # QEM fits on at most this many elements (per tensor)


def encodings(k: int, binary: bool) -> torch.Tensor:
    """All ``2^k`` encodings (rows) in ``{0,1}^k`` (``binary``) or ``{-1,+1}^k``."""
    rows = torch.tensor(list(itertools.product((0.0, 1.0), repeat=k)), dtype=torch.float64)
    rows = rows.flip(1)  # column i is the bit of weight 2^i
    return rows if binary else 2 * rows - 1


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A weight as ``[C_out, rest]`` (one row per output channel; a vector is one row)."""
    return x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)


class LQNetQuantizer(Quantizer):
    """LQ-Net quantizer: weights (``{-1,+1}`` basis per output channel) or activations
    (``{0,1}`` basis per layer)."""

    scheme = "lqnet"

    def __init__(self, bits: int = 4, role: str = "weight", signed: bool = True,
                 per_channel: bool = True) -> None:
        super().__init__(check_bits(bits, 1 if role == "weight" else 2, 8))
        self.role = role
        self._per_channel = per_channel and role == "weight"
        if not per_channel:
            self.scheme = "lqnet_layer"
        self.signed = signed if role != "weight" else True
        self.binary = role != "weight"
        self.k = self.bits if role == "weight" or not signed else self.bits - 1
        enc = encodings(self.k, self.binary).float()
        self.register_buffer("_enc", enc, persistent=False)
        # [K]; a weight's becomes [C_out, K] when it first sees the weight
        self.register_buffer("basis", 2.0 ** torch.arange(self.k, dtype=torch.float32))

    @property
    def per_channel(self) -> bool:
        """One basis per output channel (weights of ``lqnet``), else one per tensor."""
        return self._per_channel

    def _ensure(self, x: torch.Tensor) -> None:
        """Give a weight quantizer one basis row per output channel of ``x``."""
        if not self.per_channel:
            return
        c = _rows(x).shape[0]
        if self.basis.dim() == 1 or self.basis.shape[0] != c:
            row = self.basis if self.basis.dim() == 1 else self.basis[0]
            self.basis = row.expand(c, self.k).clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "basis"
        if key in state_dict and state_dict[key].shape != self.basis.shape:
            self.basis = torch.zeros_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- levels ----------------------------------------------------------------------------
    def _values(self, basis: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(level values ascending, their encodings); per channel (a row each) for a
        ``[C, K]`` basis."""
        v = self.basis if basis is None else basis
        vals = v @ self._enc.to(v.dtype).T  # [..., 2^K]
        order = torch.argsort(vals, dim=-1)
        return vals.gather(-1, order), self._enc.to(v.dtype)[order]

    def levels(self) -> torch.Tensor:
        """Values ``v^T e`` of every encoding (magnitudes for signed activations), ascending;
        one row per output channel once a weight quantizer has seen its weight."""
        return self._values()[0].clone()

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        """What the basis approximates: ``x`` as channel rows (weights), ``|x|`` (signed
        acts) or ``x``."""
        if self.per_channel:
            return _rows(x)
        return x.abs() if self.signed else x

    @staticmethod
    def _nearest(t: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """Index of the nearest level (ties to the larger); row-wise for 2-D ``vals``."""
        mids = ((vals[..., 1:] + vals[..., :-1]) / 2).to(t.dtype).contiguous()
        if vals.dim() == 1:
            return torch.bucketize(t.contiguous(), mids, right=True)
        return torch.searchsorted(mids, t.contiguous(), right=True)

    # -- QEM -------------------------------------------------------------------------------
    @torch.no_grad()
    def _qem_target(self, t: torch.Tensor) -> torch.Tensor | None:
        """The least-squares basis ``v*`` for ``t`` with encodings fixed (None if singular)."""
        if self.per_channel:
            rows = t.detach().double()
            if rows.shape[1] > SAMPLE // rows.shape[0] + 1:
                rows = rows[:, :: rows.shape[1] // max(SAMPLE // rows.shape[0], 1)]
            basis = self.basis.double()
            vals, enc = self._values(basis)
            idx = self._nearest(rows, vals)  # [C, M]
            b = enc.gather(1, idx.unsqueeze(-1).expand(-1, -1, self.k))  # [C, M, K]
            eye = torch.eye(self.k, dtype=b.dtype, device=b.device)
            gram = b.transpose(1, 2) @ b + QEM_EPS * eye
            rhs = (b.transpose(1, 2) @ rows.unsqueeze(-1)).squeeze(-1) + QEM_EPS * basis
            return torch.linalg.solve(gram, rhs).abs().clamp_min(1e-8)
        flat = t.detach().reshape(-1).double()
        if flat.numel() > SAMPLE:
            flat = flat[:: flat.numel() // SAMPLE]
        vals, enc = self._values(self.basis.double())
        b = enc[self._nearest(flat, vals)]
        gram = b.T @ b
        if torch.linalg.matrix_rank(gram) < self.k:
            return None
        return torch.linalg.solve(gram, b.T @ flat).abs().clamp_min(1e-8)

    @torch.no_grad()
    def qem_step(self, x: torch.Tensor, momentum: float = QEM_MOMENTUM) -> None:
        """One QEM update of the basis from ``x`` (running average with ``momentum``)."""
        self._ensure(x)
        v = self._qem_target(self._target(x))
        if v is not None:
            self.basis.mul_(momentum).add_((1 - momentum) * v.to(self.basis))

    @torch.no_grad()
    def calibrate_from(self, x: torch.Tensor) -> None:
        self._ensure(x)
        t = self._target(x.detach()).double()
        if not t.numel():
            return
        spread = t.abs().amax(-1, keepdim=True) if self.per_channel else t.abs().max()
        if not bool((spread > 0).all()):
            return
        top = float((2.0 ** torch.arange(self.k)).sum())
        uniform = 2.0 ** torch.arange(self.k, dtype=torch.float64)
        self.basis.copy_((uniform * spread / top).reshape(self.basis.shape))
        for _ in range(CALIBRATION_STEPS):
            self.qem_step(x.detach().double(), momentum=0.0)

    # -- forward / export ------------------------------------------------------------------
    def _quantize(self, x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """The fake-quantized values of ``x`` (no gradient), shaped like ``x``."""
        t = self._target(x.detach())
        vals = self._values(basis)[0].to(x.dtype)
        idx = self._nearest(t, vals)
        q = vals.gather(1, idx) if self.per_channel else vals[idx]
        q = q.reshape(x.shape)
        if not self.per_channel and self.signed:
            q = torch.where(x < 0, -q, q)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.calibrate_from(x)
            return x
        self._ensure(x)
        if self.training and torch.is_grad_enabled() and x.requires_grad:
            self.qem_step(x)
        q = self._quantize(x, self.basis)
        if self.per_channel:  # plain STE, as the authors' weights
            return x + (q - x).detach()
        top = self._values()[0][-1].to(x.dtype)
        mag = x.abs() if self.signed else x
        x_ste = torch.where(mag <= top, x, x.detach())  # STE of min(x, top level)
        return x_ste + (q - x_ste).detach()

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        xd = x.detach().double().cpu()
        self._ensure(xd)
        basis = self.basis.double().cpu()
        q = self._quantize(xd, basis)
        # ascending magnitudes: 2^(K-1) for a {-1,+1} basis, for every channel
        book = torch.unique(self._values(basis)[0].abs())
        codes = torch.bucketize(q.abs(), (book[1:] + book[:-1]) / 2, right=True)
        dtype = np.uint8 if len(book) <= 256 else np.uint16
        return Exported(
            scheme=self.scheme, bits=self.bits,
            codes=codes.numpy().astype(dtype), negative=(q < 0).numpy(),
            codebook=book.numpy(), exponent=None,
        )

    def side_bits(self, shape: tuple[int, ...]) -> int:
        """Storage of a weight's real basis: ``K`` FP32 values per output channel."""
        return (shape[0] if self.per_channel and len(shape) > 1 else 1) * self.k * 32

    def extra_repr(self) -> str:
        return f"bits={self.bits}, role={self.role}, signed={self.signed}, k={self.k}"


registry.register(
    "lqnet",
    lambda bits, role, signed: LQNetQuantizer(bits, role, signed),
)
registry.register(
    "lqnet_layer",
    lambda bits, role, signed: LQNetQuantizer(bits, role, signed, per_channel=False),
)
