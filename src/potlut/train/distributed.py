"""Multi-process training on PyTorch's own engine (``torchrun``): one process per device.

``torchrun --nproc_per_node=N -m potlut train ...`` starts N processes and describes the
group in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT);
:func:`init_from_env` joins it with NCCL on GPUs or gloo on CPUs. The training loop then
wraps the model in DistributedDataParallel, and:

- :class:`GlobalBatchSampler` gives rank ``r`` of ``W`` the r-th share of every *global*
  batch of exactly the order one process would use (same seeded permutation). Unlike
  ``torch.utils.data.DistributedSampler`` (which interleaves its own permutation and pads
  with repeated samples), N processes with a global batch ``B`` then take the same steps as
  one process with batch ``B``: the loss of a share is weighted by its size, so uneven last
  batches average exactly. A last batch smaller than ``W`` is dropped (nothing to share).
- Synchronized BatchNorm (``sync_bn``): batch statistics over the global batch, as in one
  process. On GPUs this is ``nn.SyncBatchNorm``; it does not run on CPUs, so there
  :class:`GlobalBatchNorm2d` computes the same statistics with two differentiable
  all-reduces (sum, then sum of squared deviations).
- Only rank 0 prints and writes checkpoints; every rank reads them on resume.
- Evaluation splits the test set over the ranks and adds up the counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from potlut.errors import PotlutConfigError
from potlut.metrics.accuracy import topk_correct
from potlut.nn.grid import GridBatchNorm2d


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the group (1 without torchrun)."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    return dist.get_rank() if _active() else 0


def is_main() -> bool:
    """True in the process that prints and writes files (rank 0)."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device: str = "auto") -> int:
    """Join the process group that torchrun announced; returns the world size.

    One process (no WORLD_SIZE, or 1) needs no group and nothing happens. On CUDA each
    process binds to GPU ``LOCAL_RANK`` and uses NCCL; otherwise gloo over TCP.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or _active():
        return world_size()
    if not dist.is_available():
        raise PotlutConfigError("this PyTorch build has no torch.distributed; run one process")
    use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
    if use_cuda:
        if local_rank() >= torch.cuda.device_count():
            raise PotlutConfigError(
                f"LOCAL_RANK {local_rank()} but only {torch.cuda.device_count()} GPUs; "
                "use --nproc_per_node at most the GPU count"
            )
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return world_size()


def shutdown() -> None:
    """Leave the process group (safe to call without one)."""
    if _active():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (e.g. a run folder chosen from the clock)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum of each value over all ranks (float64)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def shard_bounds(n: int, r: int, w: int) -> tuple[int, int]:
    """[lo, hi) of share ``r`` when ``n`` items are split into ``w`` near-equal shares."""
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of rank ``r``: its share of each global batch of ``randperm(n, generator)``."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator,
                 rank: int, world: int) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.rank, self.world = rank, world

    def global_sizes(self) -> list[int]:
        """Size of every global batch this sampler takes part in."""
        sizes = [min(self.batch_size, self.n - s) for s in range(0, self.n, self.batch_size)]
        return [m for m in sizes if m >= self.world]

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(self.n, generator=self.generator).tolist()
        for start in range(0, self.n, self.batch_size):
            batch = perm[start : start + self.batch_size]
            if len(batch) < self.world:
                return
            lo, hi = shard_bounds(len(batch), self.rank, self.world)
            yield batch[lo:hi]

    def __len__(self) -> int:
        return len(self.global_sizes())


def sharded_loader(data: Dataset, batch_size: int, generator: torch.Generator,
                   num_workers: int) -> tuple[DataLoader, list[int]]:
    """This rank's DataLoader of one epoch and the global size of each of its batches."""
    sampler = GlobalBatchSampler(len(data), batch_size, generator, rank(), world_size())
    loader = DataLoader(data, batch_sampler=sampler, generator=generator,
                        num_workers=num_workers)
    return loader, sampler.global_sizes()


class _SumOverRanks(torch.autograd.Function):
    """Differentiable all-reduce (sum): the gradient of a sum over ranks is summed too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D401
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        dist.all_reduce(g)
        return g


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batches of every rank (CPU or GPU).

    Same parameters and buffers as ``nn.BatchNorm2d``; outside a process group, or in
    eval mode, it is exactly ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        dist.all_reduce(count)
        mean = _SumOverRanks.apply(x.sum((0, 2, 3))) / count
        centred = x - mean[None, :, None, None]
        var = _SumOverRanks.apply((centred * centred).sum((0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def _swap_batchnorm(model: nn.Module, want: Callable[[nn.Module], bool],
                    make: Callable[[nn.Module], nn.Module]) -> int:
    """Replace every matching BatchNorm child in place, keeping its parameter objects."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not want(child):
                continue
            new = make(child)
            new.weight, new.bias = child.weight, child.bias
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(new, buf, getattr(child, buf))
            new.train(child.training)
            setattr(parent, name, new)
            swapped += 1
    return swapped


def _like(cls, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    return cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)


def sync_batchnorm(model: nn.Module, device: torch.device) -> int:
    """Make every BatchNorm2d of ``model`` synchronized (in place); returns how many."""
    plain = (nn.BatchNorm2d, GridBatchNorm2d)  # the grid twin is a BatchNorm2d in training
    if device.type == "cuda":
        return _swap_batchnorm(model, lambda m: type(m) in plain,
                               lambda m: _like(nn.SyncBatchNorm, m).to(device))
    return _swap_batchnorm(model, lambda m: type(m) in plain,
                           lambda m: _like(GlobalBatchNorm2d, m).to(device))


def unsync_batchnorm(model: nn.Module) -> int:
    """Undo :func:`sync_batchnorm`: grid-aware ``BatchNorm2d`` again (its eval forward is
    the engine's where the model runs exactly, :mod:`potlut.nn.grid`), same tensors."""
    return _swap_batchnorm(
        model, lambda m: isinstance(m, (nn.SyncBatchNorm, GlobalBatchNorm2d)),
        lambda m: _like(GridBatchNorm2d, m).to(m.weight.device if m.affine else "cpu"),
    )


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` (parameters broadcast from rank 0)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


@torch.no_grad()
def evaluate_sharded(model: nn.Module, data: Dataset, device: torch.device,
                     batch_size: int = 512, num_workers: int = 0) -> tuple[float, float]:
    """(Top-1, Top-5) in percent over the whole set, each rank counting its own slice."""
    lo, hi = shard_bounds(len(data), rank(), world_size())
    was_training = model.training
    model.eval()
    c1 = c5 = 0
    try:
        loader = DataLoader(Subset(data, range(lo, hi)), batch_size=batch_size,
                            num_workers=num_workers)
        for x, y in loader:
            a, b = topk_correct(model(x.to(device)), y.to(device))
            c1, c5 = c1 + a, c5 + b
    finally:
        model.train(was_training)
    c1, c5, n = all_reduce_sum([c1, c5, hi - lo], device)
    return 100.0 * c1 / max(n, 1), 100.0 * c5 / max(n, 1)
