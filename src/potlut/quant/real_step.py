"""Real quantization steps that the integer engine multiplies exactly.

A scheme with a real clipping scale (APoT, PACT, DoReFa) has levels ``v * step``: small
integers ``v`` times one real ``step``. The engine multiplies the integers ``v`` and folds
both layers' steps and the BatchNorm scale into one requantization multiplier ``M``
(:func:`potlut.infer.program.make_requant`). That multiplier is exact, and the
fake-quantized model then computes the engine's numbers, only if
(1) every level is exactly ``v * step`` in float32, and
(2) ``bn_scale * step_w * step_a`` fits M's 31 bits.
So a step keeps :data:`STEP_BITS` significant bits (a relative change below 2^-11,
straight-through gradient), and levels and decisions are computed from ``v`` and
``step``: never as ``alpha * (v / den)``, whose two roundings put levels and midpoints a
float32 ulp away from where the engine puts them. With the 7 significant bits of a stored
BatchNorm scale (:data:`potlut.nn.export.BN_BITS`), the product needs 7 + 11 + 11 = 29
bits.
"""

from __future__ import annotations

import torch

from potlut.errors import PotlutConfigError
from potlut.quant.iospot import _FakeQuantBackward

STEP_BITS = 11  # significant bits of a real quantization step


def snap_step(step: torch.Tensor) -> torch.Tensor:
    """``step`` rounded to :data:`STEP_BITS` significant bits (straight-through gradient)."""
    mant, exp = torch.frexp(step.detach())
    snapped = torch.ldexp(torch.round(mant * 2.0**STEP_BITS), exp - STEP_BITS)
    return step + (snapped.to(step.dtype) - step).detach()


def integer_levels(levels: torch.Tensor, max_den: int = 4096) -> tuple[torch.Tensor, int]:
    """Unit-scale levels (ascending, largest 1) as ``(ints, den)`` with ``levels = ints / den``,
    ``den`` the smallest denominator that makes every level an integer."""
    lv = levels.detach().double().cpu()
    for den in range(1, max_den + 1):
        v = torch.round(lv * den)
        if bool(torch.all((lv * den - v).abs() <= 1e-9 * den)):
            return v, den
    raise PotlutConfigError(f"levels {lv.tolist()} are not integers over one denominator "
                            f"<= {max_den}")


def step_codes(mag: torch.Tensor, step: torch.Tensor, ints: torch.Tensor) -> torch.Tensor:
    """Index of the level ``ints * step`` nearest to ``mag >= 0``, ties to the larger.

    Compared with the midpoints ``(v_j + v_j+1) / 2 * step``, exact in float32, so the
    decision is the engine's threshold ``Y >= ceil(mid * 2^F)`` on every value of its grid.
    """
    mids = (ints[1:] + ints[:-1]).to(mag.dtype) / 2 * step.to(mag.dtype)
    return torch.bucketize(mag, mids, right=True)


class StepFakeQuant(_FakeQuantBackward):
    """``q = sign(x) * step * v[nearest]``, ``step = alpha / den``, clipped at ``alpha``
    (the largest level, ``v[-1] = den``): the RCF forward of a real-scale scheme on exact
    levels, with the shared backward (STE for ``x``, ``(q - x)/alpha`` for ``alpha``)."""

    n_extra = 3

    @staticmethod
    def forward(ctx, x, alpha, ints, den: int, signed: bool):
        step = alpha / den  # exact: alpha is den times a STEP_BITS step
        mag = x.abs() if signed else x.clamp_min(0)
        v = ints.to(x.dtype)
        q_mag = v[step_codes(mag, step, v)] * step
        q = torch.where(x < 0, -q_mag, q_mag) if signed else q_mag
        inside = (mag <= alpha) if signed else (x >= 0) & (x <= alpha)
        _FakeQuantBackward.save(ctx, x, alpha, q, inside)
        return q
