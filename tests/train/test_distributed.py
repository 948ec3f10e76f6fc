"""Multi-process training: global-batch sharding, synced BatchNorm, torchrun = one process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from potlut import data, models
from potlut.train import TrainConfig, fit
from potlut.train.checkpoint import load_checkpoint
from potlut.train.distributed import GlobalBatchSampler, shard_bounds


class _Index(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _single_process_batches(n: int, batch: int, seed: int) -> list[list[int]]:
    g = torch.Generator()
    g.manual_seed(seed)
    return [b.tolist() for b in DataLoader(_Index(n), batch_size=batch, shuffle=True, generator=g)]


def _rank_batches(n: int, batch: int, seed: int, rank: int, world: int) -> list[list[int]]:
    g = torch.Generator()
    g.manual_seed(seed)
    sampler = GlobalBatchSampler(n, batch, g, rank, world)
    return [b.tolist() for b in DataLoader(_Index(n), batch_sampler=sampler, generator=g)]


def test_shares_of_all_ranks_rebuild_the_single_process_batches():
    n, batch, seed = 103, 16, 1234
    single = _single_process_batches(n, batch, seed)
    assert _rank_batches(n, batch, seed, 0, 1) == single
    world = 3
    shares = [_rank_batches(n, batch, seed, r, world) for r in range(world)]
    assert all(len(s) == len(single) for s in shares)  # last batch (7) >= world: kept
    for k, full in enumerate(single):
        assert sum((shares[r][k] for r in range(world)), []) == full
    assert [len(shares[r][-1]) for r in range(world)] == [3, 2, 2]


def test_tail_smaller_than_world_is_dropped_and_bounds_partition():
    n, batch = 33, 8  # last global batch has 1 sample: nothing to share among 2 ranks
    g = torch.Generator()
    assert len(GlobalBatchSampler(n, batch, g, 0, 2)) == 4
    assert GlobalBatchSampler(n, batch, g, 1, 2).global_sizes() == [8, 8, 8, 8]
    for total in range(0, 12):
        for w in (1, 2, 3, 5):
            parts = [shard_bounds(total, r, w) for r in range(w)]
            assert parts[0][0] == 0 and parts[-1][1] == total
            assert all(parts[i][1] == parts[i + 1][0] for i in range(w - 1))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def _train(args, out, tmp_path, procs):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={procs}"] if procs > 1 else [sys.executable]
    cmd = launcher + ["-m", "potlut", "train", "--epochs", "1", "--qat-epochs", "1",
                      "--batch-size", "64", "--device", "cpu", "--sync-bn",
                      "--out", str(out), *args]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_two_processes_with_torchrun_match_one_process(tmp_path):
    """2 x 32 per step (gloo, loopback, synced BatchNorm) == 1 x 64, after one epoch."""
    two = _train([], tmp_path / "two", tmp_path, 2)
    assert two.stderr.count("fp32 epoch 1/1:") == 1  # only rank 0 prints
    bundle = data.load("digits")
    torch.manual_seed(0)  # as pipeline.run: seed, then build
    one = models.build("small_cnn", bundle.num_classes, bundle.in_channels)
    hist = fit(one, bundle, TrainConfig(epochs=1, batch_size=64, device="cpu"), progress=False)
    a = one.state_dict()
    b = load_checkpoint(tmp_path / "two" / "fp32.ckpt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-5, rtol=0), k
    rb = json.loads((tmp_path / "two" / "report.json").read_text())
    ea, eb = hist.epochs[0], rb["history"]["fp32"]["epochs"][0]
    assert ea.test_top1 == eb["test_top1"] and ea.train_top1 == eb["train_top1"]
    assert ea.train_loss == pytest.approx(eb["train_loss"], abs=1e-5)
    assert len(rb["history"]["qat"]["epochs"]) == 1  # the QAT stage ran under DDP too
    assert rb["config"]["extra"]["world_size"] == 2
    assert rb["config"]["extra"]["train"] == {"sync_bn": True}


@pytest.mark.slow
def test_qat_under_ddp_equals_one_process_on_the_global_batch(tmp_path):
    """QAT (learnable distribution loss, synced BatchNorm) for 2 epochs = 8 steps on 2 x 32
    gives the weights and coefficients of 1 x 64: the coefficient's task-gradient norm is the
    norm of the rank-averaged gradient, as DDP averages it (a rank's own norm gave lambda
    0.95 instead of 0.72 after 4 steps and moved weights by 7 % of their size)."""
    script = Path(__file__).with_name("ddp_qat_steps.py")
    runs = {}
    for procs in (1, 2):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={procs}"] if procs > 1 else [sys.executable]
        out = tmp_path / f"{procs}.pt"
        res = subprocess.run([*launcher, str(script), str(out), "2"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[procs] = torch.load(out)
    one, two = runs[1], runs[2]
    assert len(one["lams"]) == 2 and all(v > 0 for v in one["lams"])
    assert two["lams"] == pytest.approx(one["lams"], rel=1e-5)
    # The two runs differ only in the order of float32 sums (gradient all-reduce, BatchNorm
    # statistics): a few ulps (2^-24) per step, measured 2.5e-7 of a tensor's largest
    # magnitude after 12 steps; 1e-5 is 40 times that, and a quantized weight that took
    # another level (the effect of a wrong coefficient) moves its tensor by more than 1e-3.
    assert one["model"].keys() == two["model"].keys()
    for k, a in one["model"].items():
        b = two["model"][k]
        if not a.is_floating_point():
            assert torch.equal(a, b), k
            continue
        scale = float(a.abs().max())
        assert float((a.double() - b.double()).abs().max()) <= 1e-5 * scale, k
