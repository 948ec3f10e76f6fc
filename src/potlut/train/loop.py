"""The training loop: the paper's recipe scaled to the epoch count, checkpoint and resume.

Recipe (He et al. 2024): SGD, lr 0.04, momentum 0.9, weight decay 4e-4, batch 128,
lr x0.1 at epochs 60/120/160/200/260 of 300 -- the milestones are scaled to ``epochs``
(``schedule="paper"``); the default decays the same lr to 0 on a cosine instead.
Quantizer scales and the distribution-loss coefficient get no weight decay.

Reproducibility: the shuffling of epoch ``e`` comes from a generator seeded with
``(seed, e)``, and the checkpoint holds model, optimizer, scheduler and loss state, so a
run resumed after a kill takes exactly the same steps as an uninterrupted one.

Under ``torchrun`` (see train/distributed.py) the same loop runs in every process: the
model is wrapped in DistributedDataParallel, each rank trains its share of every global
batch, and only rank 0 prints and writes checkpoints. One process is unaffected.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from potlut.data.bundle import DataBundle
from potlut.errors import PotlutCheckpointError, PotlutConfigError
from potlut.metrics.accuracy import evaluate, topk_correct
from potlut.nn.grid import grid_off
from potlut.quant.base import Quantizer
from potlut.train import distributed as pdist
from potlut.train.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from potlut.train.losses import DistributionLoss

PAPER_EPOCHS = 300
PAPER_MILESTONES = (60, 120, 160, 200, 260)
SCHEDULES = ("cosine", "paper")
DIST_LR_SCALE = 0.1  # learning-rate factor of the distribution-loss coefficient


@dataclass
class TrainConfig:
    """Hyper-parameters of one training stage (defaults: the paper's recipe)."""

    epochs: int = PAPER_EPOCHS
    lr: float = 0.04
    momentum: float = 0.9
    weight_decay: float = 4e-4
    batch_size: int = 128
    gamma: float = 0.1
    seed: int = 0
    dist_loss: str = "learnable"
    dist_lambda: float = 1.0
    # |regularizer grad| / |task grad|: ratio mode's share; learnable mode's start (None: the
    # mode's default, 1 % and practically 0)
    dist_ratio: float | None = None
    device: str = "auto"
    num_workers: int = 0
    sync_bn: bool = False  # multi-process: BatchNorm statistics over the global batch
    amp: bool = False  # mixed precision for the FP32 stage on CUDA (never for QAT)
    schedule: str = "cosine"  # "cosine" (default) or "paper" (the scaled step decays)
    dist_ramp: bool = False  # learnable: ramp dist_ratio from 0 over the stage (late pull)
    kd: float = 0.0  # with a teacher: weight of the distillation term (Hinton et al. 2015)
    kd_temperature: float = 4.0

    def validate(self) -> None:
        if self.epochs < 1:
            raise PotlutConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise PotlutConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise PotlutConfigError(f"learning rate must be > 0, got {self.lr}")
        if not 0.0 <= self.kd <= 1.0:
            raise PotlutConfigError(f"kd weight must be in [0, 1], got {self.kd}")
        if not self.kd_temperature > 0:
            raise PotlutConfigError(f"kd temperature must be > 0, got {self.kd_temperature}")
        if self.dist_ratio is not None and not self.dist_ratio > 0:
            raise PotlutConfigError(f"dist_ratio must be > 0, got {self.dist_ratio}")
        if self.schedule not in SCHEDULES:
            raise PotlutConfigError(
                f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")

    def milestones(self) -> list[int]:
        """The paper's decay epochs scaled from 300 to ``epochs`` (distinct, inside the run)."""
        ms = {round(m * self.epochs / PAPER_EPOCHS) for m in PAPER_MILESTONES}
        return sorted(m for m in ms if 0 < m < self.epochs)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_top1: float
    test_top1: float
    test_top5: float
    lr: float
    dist_lambda: float | None = None
    dist_ratio: float | None = None  # learnable: the learned ratio at the end of the epoch


@dataclass
class History:
    """Per-epoch log of a stage; ``done`` once every epoch ran."""

    stage: str
    epochs: list[EpochLog] = field(default_factory=list)
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "done": self.done, "epochs": [asdict(e) for e in self.epochs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(d["stage"], [EpochLog(**e) for e in d["epochs"]], bool(d["done"]))


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise PotlutConfigError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PotlutConfigError("--device cuda asked for, but no CUDA device is available")
    return dev


def _param_groups(model: nn.Module, dist: DistributionLoss, wd: float, lr: float) -> list[dict]:
    """Weight decay on weights and BatchNorm, none on quantizer scales and the loss coefficient.

    The coefficient ``s`` of the distribution loss gets its own group (same optimizer): no
    momentum and ``lr * DIST_LR_SCALE``. With momentum at the full rate, ``lambda = exp(-s)``
    overshot from 1 to ~1000 within 3 epochs on digits (4-bit) and the model collapsed to
    9.6% Top-1 before recovering; with this group it rises smoothly.
    """
    quant_ids = {id(p) for m in model.modules() if isinstance(m, Quantizer) for p in m.parameters()}
    decay = [p for p in model.parameters() if id(p) not in quant_ids and p.requires_grad]
    no_decay = [p for p in model.parameters() if id(p) in quant_ids and p.requires_grad]
    groups = [{"params": decay, "weight_decay": wd}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if dist.s.requires_grad:
        groups.append({"params": [dist.s], "weight_decay": 0.0, "momentum": 0.0,
                       "lr": lr * DIST_LR_SCALE})
    return groups


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    """Cosine decay to 0 over the stage (default), or the paper's steps scaled to ``epochs``.

    Scaled to 60 epochs the paper's five x0.1 steps leave lr < 1e-6 for the last third, where
    only BatchNorm statistics move; cosine keeps every epoch useful (README ablation table).
    """
    if cfg.schedule == "paper":
        return torch.optim.lr_scheduler.MultiStepLR(opt, cfg.milestones(), gamma=cfg.gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)


def _epoch_loader(
    data: DataBundle, cfg: TrainConfig, epoch: int
) -> tuple[DataLoader, list[int] | None]:
    """The epoch's loader, and under torchrun the global size of each of its batches."""
    g = torch.Generator()
    g.manual_seed(cfg.seed * 100_003 + epoch)
    if hasattr(data.train, "set_epoch"):  # per-sample seeded augmentation (data/transforms.py)
        data.train.set_epoch(cfg.seed * 100_003 + epoch)
    if pdist.world_size() > 1:
        return pdist.sharded_loader(data.train, cfg.batch_size, g, cfg.num_workers)
    return DataLoader(
        data.train, batch_size=cfg.batch_size, shuffle=True, generator=g,
        num_workers=cfg.num_workers, drop_last=False,
        persistent_workers=False,
    ), None


def _amp_dtype(cfg: TrainConfig, stage: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision only where safe: the FP32 stage on CUDA (QAT's PoT rounding stays FP32)."""
    if not (cfg.amp and stage == "fp32" and device.type == "cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


EpochCallback = Callable[[int, EpochLog], None]
# (training model, x, y, epoch, step) -> (total loss to minimize, task loss, logits): a
# training step other than cross-entropy + distribution loss (e.g. train/switchable.py)
StepLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, int, int],
                    tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class _Run:
    """What every step of one stage shares, built once by ``fit`` (kept together, not globals)."""

    model: nn.Module
    train_model: nn.Module  # ``model`` itself, or its DDP wrapper under torchrun
    device: torch.device
    world: int
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    aux_losses: list[nn.Module]
    dist: DistributionLoss
    opt: torch.optim.Optimizer
    sched: Any
    step_loss: StepLoss | None = None
    teacher: nn.Module | None = None


def fit(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    *,
    stage: str = "fp32",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
    meta: dict[str, Any] | None = None,
    step_loss: StepLoss | None = None,
    teacher: nn.Module | None = None,
) -> History:
    """Train ``model`` in place for ``cfg.epochs`` epochs and return the per-epoch history.

    With ``checkpoint`` set, the full training state is written atomically after every
    epoch; with ``resume`` the run continues from it (and returns at once if it is done).
    ``meta`` (model, data, scheme, bits, ...) is stored with it, and a checkpoint whose
    meta or recipe differs from this run's is refused rather than silently mixed in.
    ``step_loss`` replaces the step's loss (cross-entropy + distribution loss + aux losses).
    Each epoch's test Top-1 is the fake-quantized model's in float32, except the last
    epoch's, which is on the integer engine's grid (:mod:`potlut.nn.grid`: equal to the
    engine's on every image, about 9x the cost of a float32 eval).
    ``teacher`` (e.g. the FP32 model QAT starts from), with ``cfg.kd > 0``, turns the task
    loss into ``(1 - kd)·CE + kd·T²·KL(teacher/T || student/T)``; it runs in eval mode.
    """
    cfg.validate()
    device, world, train_model = _place_model(model, cfg)
    main = pdist.is_main()
    progress = progress and main
    amp_dtype = _amp_dtype(cfg, stage, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    aux_losses = [m for m in model.modules() if callable(getattr(m, "aux_loss", None))]
    dist, opt, sched = _build_optimizer(model, cfg, stage, device)
    if teacher is not None and cfg.kd > 0:
        teacher = teacher.to(device).eval()
    else:
        teacher = None
    run = _Run(model, train_model, device, world, amp_dtype, scaler, aux_losses, dist, opt, sched,
               step_loss, teacher)
    history, start = History(stage), 0
    if checkpoint is not None and resume and Path(checkpoint).exists():
        history, start = _restore_checkpoint(run, checkpoint, stage, cfg, meta or {})
    ce = nn.CrossEntropyLoss()
    for epoch in range(start, cfg.epochs):
        if cfg.dist_ramp:
            dist.set_ramp(epoch, cfg.epochs)
        tot_loss, tot_correct, tot_n = _train_epoch(run, data, cfg, stage, epoch, ce, progress)
        sched.step()
        # epochs before the last in float32 (fast); the last on the engine's grid
        with (grid_off(model) if epoch + 1 < cfg.epochs else contextlib.nullcontext()):
            t1, t5 = _evaluate(run, data, cfg)
        log = EpochLog(
            epoch + 1, tot_loss / tot_n, 100 * tot_correct / tot_n, t1, t5,
            opt.param_groups[0]["lr"], dist.lam if dist.mode != "off" else None,
            float(dist.ratio_now) if dist.mode == "learnable" else None,
        )
        history.epochs.append(log)
        history.done = epoch + 1 == cfg.epochs
        if progress:
            _print_epoch(stage, cfg, log)
        if checkpoint is not None and main:
            _save(run, checkpoint, stage, cfg, history)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, log)
    history.done = True
    if world > 1 and cfg.sync_bn:
        pdist.unsync_batchnorm(model)
    return history


def _place_model(model: nn.Module, cfg: TrainConfig) -> tuple[torch.device, int, nn.Module]:
    """Move ``model`` to its device and, under torchrun, wrap it for DDP.

    Returns the device, the world size and the module to call in the training step; the
    unwrapped ``model`` stays the one that is evaluated, checkpointed and returned.
    """
    device = pick_device(cfg.device)
    model.to(device)
    world = pdist.world_size()
    if world > 1 and cfg.sync_bn:
        pdist.sync_batchnorm(model, device)
    train_model = pdist.wrap(model, device) if world > 1 else model
    return device, world, train_model


def _build_optimizer(
    model: nn.Module, cfg: TrainConfig, stage: str, device: torch.device
) -> tuple[DistributionLoss, torch.optim.Optimizer, Any]:
    """Seed torch, then build the distribution loss, SGD over its param groups, and the schedule.

    The seed is set here, after the model is placed and before anything below draws from
    the generator, so a fresh run starts from the same state every time.
    """
    torch.manual_seed(cfg.seed)
    dist = DistributionLoss(cfg.dist_loss if stage != "fp32" else "off", cfg.dist_lambda,
                            cfg.dist_ratio).to(device)
    opt = torch.optim.SGD(
        _param_groups(model, dist, cfg.weight_decay, cfg.lr), lr=cfg.lr, momentum=cfg.momentum
    )
    return dist, opt, _scheduler(opt, cfg)


def _restore_checkpoint(
    run: _Run, checkpoint: str | Path, stage: str, cfg: TrainConfig, meta: dict
) -> tuple[History, int]:
    """Load a checkpoint into the run; return its history and the first epoch still to train.

    A checkpoint of another stage, recipe or meta is refused, and one whose tensors do not
    fit this model raises PotlutCheckpointError rather than torch's long message. The RNG
    states are restored last, so the next epoch draws exactly what the killed run would have.
    """
    state = load_checkpoint(checkpoint, run.device)
    _check_compatible(state, stage, cfg, meta, checkpoint)
    try:
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        run.dist.load_state_dict(state["dist_loss"])
        if run.scaler is not None and "scaler" in state:
            run.scaler.load_state_dict(state["scaler"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise PotlutCheckpointError(
            f"{checkpoint}: does not match this model ({str(exc).splitlines()[0][:160]})"
        ) from None
    history = History.from_dict(state["history"])
    if "rng" in state:  # where the killed run left every generator, not the seed
        restore_rng(state["rng"])
    return history, len(history.epochs)


def _train_epoch(
    run: _Run, data: DataBundle, cfg: TrainConfig, stage: str, epoch: int,
    ce: nn.Module, progress: bool,
) -> tuple[float, float, float]:
    """One pass over the training set; returns the (global) loss sum, correct count and size.

    Under torchrun each rank's loss is weighted by its share of the global batch so DDP's
    gradient mean equals the global-batch mean, and the totals are summed over ranks.
    """
    run.model.train()
    tot_loss = tot_correct = tot_n = 0.0
    loader, global_sizes = _epoch_loader(data, cfg, epoch)
    with _progress(progress, f"{stage} epoch {epoch + 1}/{cfg.epochs}", len(loader)) as bar:
        for step, (x, y) in enumerate(loader):
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            if run.step_loss is not None:
                total, loss, logits = run.step_loss(run.train_model, x, y, epoch, step)
            else:
                total, loss, logits = _default_loss(run, x, y, ce, global_sizes, step, cfg)
            _optimizer_step(run, total)
            loss_value = float(loss.detach())
            _check_finite(loss_value, stage, epoch)
            n = len(y)
            tot_loss += loss_value * n
            tot_correct += topk_correct(logits.detach(), y, (1,))[0]
            tot_n += n
            bar.step(f"loss {tot_loss / tot_n:.3f} acc {100 * tot_correct / tot_n:.1f}%")
    if run.world > 1:
        tot_loss, tot_correct, tot_n = pdist.all_reduce_sum(
            [tot_loss, tot_correct, tot_n], run.device
        )
    return tot_loss, tot_correct, tot_n


def _default_loss(run: _Run, x: torch.Tensor, y: torch.Tensor, ce: nn.Module,
                  global_sizes: list[int] | None, step: int, cfg: TrainConfig
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy + distribution loss + the model's aux losses: (total, task loss, logits).

    Under torchrun each rank's loss is weighted by its share of the global batch.
    """
    with (torch.autocast(run.device.type, dtype=run.amp_dtype) if run.amp_dtype
          else contextlib.nullcontext()):
        logits = run.train_model(x)
        loss = ce(logits, y)
        if run.teacher is not None:
            loss = (1 - cfg.kd) * loss + cfg.kd * distillation(
                logits, _teacher_logits(run.teacher, x), cfg.kd_temperature)
    if global_sizes is None:
        total = loss + run.dist(run.model)
    else:  # weight this rank's share so DDP's mean is the global-batch mean
        total = loss * (len(y) * run.world / global_sizes[step]) + run.dist(run.model)
    for m in run.aux_losses:  # model-defined extra terms (e.g. SCN's rank loss)
        total = total + m.aux_loss()
    return total, loss, logits


@torch.no_grad()
def _teacher_logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return teacher(x)


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T²·KL(softmax(teacher/T) || softmax(student/T))``, batch mean: the T² keeps its
    gradient on the scale of the cross-entropy's whatever T is."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)


def _optimizer_step(run: _Run, total: torch.Tensor) -> None:
    """Backward and step, through the GradScaler when float16 autocast needs loss scaling."""
    run.opt.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(total).backward()
        _end_step(run)
        run.scaler.step(run.opt)
        run.scaler.update()
    else:
        total.backward()
        _end_step(run)
        run.opt.step()


def _end_step(run: _Run) -> None:
    """Every distribution loss of the step (the run's and a ``step_loss`` module's, e.g. one per
    width) turns the task gradients its hooks saw into its checkpointed ``pending`` buffer."""
    losses = [run.dist]
    if isinstance(run.step_loss, nn.Module):
        losses += [m for m in run.step_loss.modules() if isinstance(m, DistributionLoss)]
    for loss in losses:
        loss.end_step()


def _check_finite(loss_value: float, stage: str, epoch: int) -> None:
    """Stop at the first NaN/inf loss with a hint, instead of training on garbage.

    Checked after the step (as before the split), so the weights of the failing step are
    already updated; the run is abandoned anyway.
    """
    if not math.isfinite(loss_value):
        raise PotlutConfigError(
            f"{stage}: loss became {loss_value} at epoch {epoch + 1}; "
            "lower --lr or check the data"
        )


def _evaluate(run: _Run, data: DataBundle, cfg: TrainConfig) -> tuple[float, float]:
    """Test Top-1/Top-5: sharded over ranks (or worker processes), else in this process."""
    if run.world > 1 or cfg.num_workers > 0:
        return pdist.evaluate_sharded(run.model, data.test, run.device, num_workers=cfg.num_workers)
    return evaluate(run.model, data.test, device=run.device)


def _print_epoch(stage: str, cfg: TrainConfig, log: EpochLog) -> None:
    """The one line per epoch on stderr (the bar above it is transient)."""
    print(
        f"{stage} epoch {log.epoch}/{cfg.epochs}: loss {log.train_loss:.4f} "
        f"train {log.train_top1:.2f}% test top1 {log.test_top1:.2f}% top5 {log.test_top5:.2f}%",
        file=sys.stderr,
    )


def _save(
    run: _Run, checkpoint: str | Path, stage: str, cfg: TrainConfig, history: History
) -> None:
    """Write the full training state atomically, RNG included, so a resume is bit-identical."""
    save_checkpoint(checkpoint, {
        "stage": stage,
        "config": asdict(cfg),
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "dist_loss": run.dist.state_dict(),
        "history": history.to_dict(),
        "rng": rng_state(),
        **({"scaler": run.scaler.state_dict()} if run.scaler is not None else {}),
    })


def _check_compatible(state: dict, stage: str, cfg: TrainConfig, meta: dict, path) -> None:
    if state.get("stage") != stage:
        raise PotlutCheckpointError(
            f"{path}: checkpoint is of stage {state.get('stage')!r}, not {stage!r}"
        )
    saved = {**state.get("meta", {}), **state.get("config", {})}
    ours = {**meta, **{k: getattr(cfg, k) for k in ("epochs", "seed", "batch_size", "lr")}}
    if stage != "fp32":
        ours["dist_loss"] = cfg.dist_loss
    for key, value in ours.items():
        if key in saved and saved[key] != value:
            raise PotlutCheckpointError(
                f"{path}: was written with {key}={saved[key]!r}, this run has "
                f"{key}={value!r}; use the same options or a new --out"
            )


class _progress:
    """A rich progress bar on stderr for one epoch (silent when disabled or not a TTY)."""

    def __init__(self, enabled: bool, title: str, total: int) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.title, self.total = title, total

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._p = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), transient=True,
                console=Console(stderr=True),
            )
            self._p.__enter__()
            self._task = self._p.add_task(self.title, total=self.total, info="")
        return self

    def step(self, info: str) -> None:
        if self.enabled:
            self._p.update(self._task, advance=1, info=info)

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
        return False
