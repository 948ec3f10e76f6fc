"""``potlut train --config FILE``: run one paper experiment (FP32 -> QAT -> report).

The config's top-level keys are :class:`~potlut.pipeline.RunConfig` fields; its optional
``[train]`` table holds options of this command (``num_workers``, ``sync_bn``, ``amp``).
Command-line options override both. The same command runs in every process of
``torchrun --nproc_per_node=N -m potlut train ...``: the processes join one group, agree
on the run folder, train their shares of each batch, and rank 0 prints and checkpoints.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from potlut.cli.app import app, user_errors
from potlut.cli.run import print_report
from potlut.errors import PotlutConfigError
from potlut.pipeline import RunConfig

TRAIN_OPTIONS: dict[str, type] = {"num_workers": int, "sync_bn": bool, "amp": bool}


@dataclasses.dataclass
class TrainRunConfig(RunConfig):
    """A RunConfig whose stages also get ``extra["train"]`` (workers, sync BN, AMP)."""

    def train_config(self, stage: str):
        return dataclasses.replace(super().train_config(stage), **self.extra.get("train", {}))


def train_options(section: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The ``[train]`` table checked against :data:`TRAIN_OPTIONS`, with CLI values on top."""
    unknown = set(section) - set(TRAIN_OPTIONS)
    if unknown:
        raise PotlutConfigError(
            f"[train]: unknown keys {sorted(unknown)}; known: {', '.join(TRAIN_OPTIONS)}"
        )
    opts = {**section, **{k: v for k, v in given.items() if v is not None}}
    for key, typ in TRAIN_OPTIONS.items():
        if key in opts and type(opts[key]) is not typ:
            raise PotlutConfigError(f"[train] {key} must be {typ.__name__}, got {opts[key]!r}")
    if opts.get("num_workers", 0) < 0:
        raise PotlutConfigError(f"num_workers must be >= 0, got {opts['num_workers']}")
    return opts


def make_config(config: Path | None, overrides: dict[str, Any],
                train_given: dict[str, Any]) -> TrainRunConfig:
    """Config file (or defaults) + overrides -> the config this command runs."""
    from potlut.config import load_config

    if config is not None:
        cfg, sections = load_config(config, overrides)
    else:
        cfg, sections = RunConfig(**{k: v for k, v in overrides.items() if v is not None}), {}
    opts = train_options(sections.get("train", {}), train_given)
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig)}
    values["extra"] = {**cfg.extra, **({"train": opts} if opts else {})}
    if config is not None:
        values["extra"]["config_file"] = str(config)
    return TrainRunConfig(**values)


@app.command("train")
@user_errors
def train_cmd(
    config: Path = typer.Option(None, "--config", help="experiment file, e.g. configs/*.toml"),
    data: str = typer.Option(None, help="override: digits or KIND:DIR (cifar10:DIR, ...)"),
    model: str = typer.Option(None, help="override: model name"),
    scheme: str = typer.Option(None, help="override: quantization scheme"),
    bits: str = typer.Option(None, help="override: bit-width (2..8), or several (2,3,4,8): "
                             "one switchable model"),
    epochs: int = typer.Option(None, help="override: FP32 epochs"),
    qat_epochs: int = typer.Option(None, help="override: QAT epochs"),
    batch_size: int = typer.Option(None, help="override: global batch size"),
    lr: float = typer.Option(None, help="override: initial learning rate"),
    seed: int = typer.Option(None, help="override: random seed"),
    dist_loss: str = typer.Option(None, help="override: off, fixed, learnable"),
    device: str = typer.Option(None, help="override: auto, cpu, cuda, cuda:N"),
    num_workers: int = typer.Option(None, help="DataLoader worker processes per rank"),
    sync_bn: bool = typer.Option(None, "--sync-bn/--no-sync-bn",
                                 help="multi-process: BatchNorm over the global batch"),
    amp: bool = typer.Option(None, "--amp/--no-amp",
                             help="mixed precision for the FP32 stage on CUDA"),
    out: Path = typer.Option(None, help="run folder (default runs/<timestamp>)"),
    resume: bool = typer.Option(False, help="continue the run in --out from its checkpoints"),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
) -> None:
    """Run an experiment config (FP32 -> QAT -> report), alone or under torchrun."""
    from potlut.pipeline import default_out_dir, run
    from potlut.train import distributed as pdist

    if bits is not None:
        from potlut.nn.switchable import parse_widths

        widths = parse_widths(bits)
        bits = list(widths) if len(widths) > 1 else widths[0]
    overrides = dict(data=data, model=model, scheme=scheme, bits=bits, epochs=epochs,
                     qat_epochs=qat_epochs, batch_size=batch_size, lr=lr, seed=seed,
                     dist_loss=dist_loss, device=device)
    cfg = make_config(config, overrides,
                      {"num_workers": num_workers, "sync_bn": sync_bn, "amp": amp})
    world = pdist.init_from_env(cfg.device)
    main = pdist.is_main()
    try:
        folder = pdist.broadcast_object(str(out or default_out_dir()))
        if world > 1:
            cfg.extra["world_size"] = world
        report = run(cfg, folder, resume=resume, progress=not as_json)
    finally:
        pdist.shutdown()
    if not main:
        return
    print_report(report, as_json)
