"""Joint QAT of every bit-width of a switchable model, with a collaborative teacher and
dynamic block swapping (Sun et al. 2021, "All at Once Network Quantization via
Collaborative Knowledge Transfer").

Each step runs the batch at every width, widest first, and minimizes the sum of their
losses (one optimizer step for all widths). Width ``b``'s loss is its cross-entropy plus its
own distribution loss (METHODS §2, one :class:`DistributionLoss` per width) plus, with the
teacher on, ``kd_weight * T^2 * KL(teacher || student)`` at temperature ``T`` against the
detached logits of its teacher from the same step.

Collaborative teacher (our reading of the paper's strategy): the teacher of width ``b`` is
the wider width whose running mean cross-entropy is lowest (ties to the narrower; the widest
until every width has a running loss); the widest width learns from the labels alone.

Dynamic block swapping: while width ``b`` trains, each unit (a quantized layer and its
BatchNorms, :meth:`SwitchableModel.units`) runs at the teacher's width with probability
``p(e) = swap_prob * max(0, 1 - e / (swap_epochs * E))``, a linear decay to 0 over the first
``swap_epochs`` of the ``E`` epochs, so the student starts leaning on the teacher's blocks
and ends on its own. The draw is seeded by (seed, epoch, step, width), so a resumed run
draws the same swaps. Teacher (distillation) and swapping switch off independently.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from potlut.data.bundle import DataBundle
from potlut.errors import PotlutConfigError
from potlut.metrics.accuracy import evaluate
from potlut.nn.switchable import SwitchableModel
from potlut.train import distributed as pdist
from potlut.train.loop import EpochLog, History, TrainConfig, fit
from potlut.train.losses import DistributionLoss


@dataclass
class SwitchConfig:
    """The joint-training options; ``teacher`` and ``swap`` are the ablation's two switches."""

    teacher: bool = True
    swap: bool = True
    kd_weight: float = 1.0
    temperature: float = 1.0
    swap_prob: float = 0.5
    swap_epochs: float = 0.5
    loss_momentum: float = 0.9

    def validate(self) -> None:
        if not 0.0 <= self.swap_prob <= 1.0:
            raise PotlutConfigError(f"swap_prob must be in [0, 1], got {self.swap_prob}")
        if not 0.0 < self.swap_epochs <= 1.0:
            raise PotlutConfigError(f"swap_epochs must be in (0, 1], got {self.swap_epochs}")
        if self.temperature <= 0 or self.kd_weight < 0:
            raise PotlutConfigError("temperature must be > 0 and kd_weight >= 0")


class JointStep(nn.Module):
    """The training step of :func:`fit_switchable` (a ``fit`` ``step_loss``) and its state:
    per-width distribution losses and running cross-entropies (buffers, so checkpoints and
    resumed runs keep them)."""

    def __init__(self, model: SwitchableModel, cfg: TrainConfig, scfg: SwitchConfig) -> None:
        super().__init__()
        self.widths = model.widths
        self.cfg, self.scfg = cfg, scfg
        self.dist = nn.ModuleDict({
            str(b): DistributionLoss(cfg.dist_loss, cfg.dist_lambda, cfg.dist_ratio)
            for b in self.widths})
        self.register_buffer("loss_ema", torch.full((len(self.widths),), float("nan")))
        self.last_teachers: dict[int, int] = {}

    def teacher_for(self, bits: int) -> int | None:
        """The collaborative choice among the wider widths (None for the widest)."""
        i = self.widths.index(bits)
        wider = list(range(i + 1, len(self.widths)))
        if not wider:
            return None
        ema = self.loss_ema
        if torch.isnan(ema[wider]).any():
            return self.widths[-1]
        best = min(wider, key=lambda j: (float(ema[j]), j))
        return self.widths[best]

    def swap_probability(self, epoch: int) -> float:
        if not self.scfg.swap:
            return 0.0
        span = self.scfg.swap_epochs * self.cfg.epochs
        return self.scfg.swap_prob * max(0.0, 1.0 - epoch / span)

    def _swaps(self, model: SwitchableModel, bits: int, teacher: int | None, epoch: int,
               step: int) -> dict[int, int]:
        p = self.swap_probability(epoch)
        if teacher is None or p <= 0:
            return {}
        g = torch.Generator().manual_seed(
            ((self.cfg.seed * 1_000_003 + epoch) * 1_000_003 + step) * 17 + bits)
        draws = torch.rand(len(model.units()), generator=g)
        return {i: teacher for i, d in enumerate(draws.tolist()) if d < p}

    def _kd(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.scfg.temperature
        return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                        reduction="batchmean", log_target=True) * t * t

    def forward(self, model: SwitchableModel, x: torch.Tensor, y: torch.Tensor, epoch: int,
                step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every width on the batch: (sum of losses, widest cross-entropy, widest logits)."""
        logits_of: dict[int, torch.Tensor] = {}
        total = x.new_zeros(())
        top_ce = top_logits = None
        m = self.scfg.loss_momentum
        for bits in reversed(self.widths):
            teacher = self.teacher_for(bits)
            self.last_teachers[bits] = teacher
            model.set_bits(bits, self._swaps(model, bits, teacher, epoch, step))
            logits = model(x)
            ce = F.cross_entropy(logits, y)
            loss = ce + self.dist[str(bits)](model.net)
            if self.scfg.teacher and teacher is not None:
                loss = loss + self.scfg.kd_weight * self._kd(logits, logits_of[teacher])
            total = total + loss
            logits_of[bits] = logits.detach()
            i = self.widths.index(bits)
            with torch.no_grad():
                old = self.loss_ema[i]
                v = ce.detach().to(old.dtype)
                self.loss_ema[i] = v if torch.isnan(old) else m * old + (1 - m) * v
            if top_ce is None:
                top_ce, top_logits = ce, logits
        model.set_bits(self.widths[-1])
        return total, top_ce, top_logits


def evaluate_widths(model: SwitchableModel, data, device: str | torch.device = "cpu"
                    ) -> dict[int, float]:
    """Test Top-1 (%) at every width; the model is left at its widest width."""
    out = {}
    for b in model.widths:
        model.set_bits(b)
        out[b] = round(evaluate(model, data, device=device)[0], 4)
    model.set_bits(model.widths[-1])
    return out


def fit_switchable(
    model: SwitchableModel,
    data: DataBundle,
    cfg: TrainConfig,
    scfg: SwitchConfig | None = None,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> tuple[History, dict[int, float]]:
    """Joint QAT of every width of ``model`` in place; returns ``fit``'s history (test Top-1
    of the widest width per epoch) and the test Top-1 of every width at the end."""
    scfg = scfg or SwitchConfig()
    scfg.validate()
    if pdist.world_size() > 1:
        raise PotlutConfigError("several bit-widths train in one process only (not under "
                                "torchrun)")
    joint = JointStep(model, cfg, scfg)
    model.joint = joint  # its buffers travel in the checkpoint with the model's
    meta = {**(meta or {}), "widths": list(model.widths), "teacher": scfg.teacher,
            "swap": scfg.swap}

    def on_epoch_end(epoch: int, log: EpochLog) -> None:
        if progress:
            print(f"switchable epoch {epoch}: teachers {joint.last_teachers}, swap p "
                  f"{joint.swap_probability(epoch - 1):.2f}", file=sys.stderr)

    try:
        hist = fit(model, data, cfg, stage="qat", checkpoint=checkpoint, resume=resume,
                   progress=progress, meta=meta, step_loss=joint, on_epoch_end=on_epoch_end)
    finally:
        del model.joint
    device = next(model.parameters()).device
    return hist, evaluate_widths(model, data.test, device)


def load_state(model: SwitchableModel, state: dict[str, torch.Tensor]) -> SwitchableModel:
    """Load a checkpoint's model state into ``model``, leaving out the joint step's state."""
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("joint.")})
    return model


NOT_JOINT = ("alq", "sq", "srq", "profit")  # schemes/methods with their own epoch schedules


def check_scheme(scheme: str) -> None:
    """Joint training runs plain QAT steps: a method with its own epoch-end schedule is refused."""
    name = scheme.split(":")[0]
    if name in NOT_JOINT:
        raise PotlutConfigError(f"scheme {scheme!r} has its own training schedule; several "
                                "bit-widths train jointly only with plain QAT schemes")
