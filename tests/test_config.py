"""Every experiment config loads and trains one tiny FP32 + QAT step on fixture data."""

import dataclasses
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from potlut import data, models
from potlut.cli.train import make_config
from potlut.config import load_config
from potlut.data.bundle import DataBundle
from potlut.errors import PotlutConfigError
from potlut.nn import convert, quant_layers
from potlut.train import fit
from tests.data.fixtures import write_cifar10, write_cifar100, write_folder, write_rafdb_original

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))
PAPER_TABLES = {"table1", "table2", "table4", "table5", "table6", "table7", "table8"}



@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    return {
        "cifar10": str(write_cifar10(root, per_batch=4, n_test=4)),
        "cifar100": str(write_cifar100(root, n_train=8, n_test=4)),
        "folder": str(write_folder(root / "imagenet", per_class=(2, 1), size=(36, 44))),
        "rafdb": str(write_rafdb_original(root / "raf", n_train=7, n_test=7)),
    }


def test_one_config_per_paper_table():
    tables = {p.name.split("_")[0] for p in CONFIGS if p.name.startswith("table")}
    assert tables == PAPER_TABLES
    modes = {load_config(p)[0].dist_loss for p in CONFIGS if p.name.startswith("table1_")}
    assert modes == {"off", "fixed", "learnable"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_with_paper_recipe_and_trains_a_tiny_step(path, fixtures):
    cfg, sections = load_config(path)
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (300, 0.04, 128)
    assert cfg.model in models.names()
    kind, _, rest = cfg.data.partition(":")
    options = rest.partition("?")[2]
    small = "size=32" if kind in ("folder", "rafdb") else options
    spec = f"{kind}:{fixtures[kind]}" + (f"?{small}" if small else "")
    run_cfg = make_config(path, {"data": spec}, {})
    bundle = data.load(run_cfg.data)
    tiny = DataBundle(bundle.name, Subset(bundle.train, range(4)),
                      Subset(bundle.test, range(min(4, len(bundle.test)))),
                      bundle.num_classes, bundle.in_shape)
    torch.manual_seed(0)
    model = models.build(run_cfg.model, bundle.num_classes, bundle.in_channels)
    fp32 = dataclasses.replace(run_cfg.train_config("fp32"), epochs=1, batch_size=4,
                               device="cpu", num_workers=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist = fit(model, tiny, fp32, stage="fp32", progress=False)
    assert len(hist.epochs) == 1 and torch.isfinite(torch.tensor(hist.epochs[0].train_loss))
    # one real SGD step: the classifier's weights moved (lr 0.04 on a non-zero gradient)
    moved = [k for k, v in model.state_dict().items()
             if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any(k.endswith("weight") for k in moved), moved
    qat = dataclasses.replace(run_cfg.train_config("qat"), epochs=1, batch_size=4,
                              device="cpu", num_workers=0)
    assert qat.dist_loss == cfg.dist_loss
    qmodel = convert(model, run_cfg.quant_spec())
    hist = fit(qmodel, tiny, qat, stage="qat", progress=False)
    assert torch.isfinite(torch.tensor(hist.epochs[0].train_loss))
    # the QAT model's weights lie on their b-bit codebooks: at most 2^b distinct values
    layers = quant_layers(qmodel)
    assert layers
    for name, layer in layers:
        w = layer.quantized_weight().detach()
        assert len(torch.unique(w)) <= 2 ** layer.bits_w, (name, layer.bits_w)
    assert "train" not in sections or set(sections["train"]) <= {"num_workers", "sync_bn", "amp"}


def test_train_section_and_overrides_are_checked(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "resnet20"\n[train]\nworkers = 3\n')
    with pytest.raises(PotlutConfigError, match=r"\[train\]: unknown keys \['workers'\]"):
        make_config(bad, {}, {})
    bad.write_text('model = "resnet20"\n[train]\nsync_bn = "yes"\n')
    with pytest.raises(PotlutConfigError, match="sync_bn must be bool"):
        make_config(bad, {}, {})
    good = tmp_path / "good.toml"
    good.write_text('model = "resnet20"\nepochs = 7\n[train]\nnum_workers = 2\n')
    cfg = make_config(good, {"epochs": 3, "bits": None}, {"sync_bn": True, "amp": None})
    tc = cfg.train_config("fp32")
    assert (cfg.model, cfg.epochs, cfg.bits) == ("resnet20", 3, 4)
    assert (tc.epochs, tc.num_workers, tc.sync_bn, tc.amp) == (3, 2, True, False)
    with pytest.raises(PotlutConfigError, match="unknown keys"):
        make_config(good, {"epoch": 3}, {})
