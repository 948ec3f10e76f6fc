"""Entry point of the ``potlut`` console command; each subcommand lives in its own module.

``inspect`` and ``infer`` need numpy only; the training commands need PyTorch, and where
it is not installed they still appear and say so in one line (exit code 2).
"""

from __future__ import annotations

import typer

from potlut.cli import compress as _compress  # noqa: F401  (registers compress, inspect)
from potlut.cli import deploy_c as _deploy_c  # noqa: F401  (registers export-c, mcu-run)
from potlut.cli import hw as _hw  # noqa: F401  (registers `potlut export-rtl`)
from potlut.cli import infer as _infer  # noqa: F401  (registers `potlut infer`)
from potlut.cli.app import app, fail

TORCH_COMMANDS = {
    "run": "FP32 training, QAT, .potlut file and report (needs PyTorch)",
    "train": "one of the paper's experiments from a config file (needs PyTorch)",
    "compare": "the paper's baselines and IOS-PoT in one table (needs PyTorch)",
    "report": "plots and Markdown of a finished run (needs PyTorch)",
    "codec": "the recurrent image codec: train, encode, decode, eval (needs PyTorch)",
}

try:
    from potlut.cli import codec as _codec  # noqa: F401  (registers `potlut codec ...`)
    from potlut.cli import compare as _compare  # noqa: F401  (registers `potlut compare`)
    from potlut.cli import report as _report  # noqa: F401  (registers `potlut report`)
    from potlut.cli import run as _run  # noqa: F401  (registers `potlut run`)
    from potlut.cli import train as _train  # noqa: F401  (registers `potlut train`)
except ModuleNotFoundError as exc:
    if exc.name != "torch":
        raise

    def _needs_torch(name: str) -> None:
        @app.command(name, help=TORCH_COMMANDS[name], context_settings={
            "allow_extra_args": True, "ignore_unknown_options": True})
        def stub(ctx: typer.Context) -> None:
            fail(f"`potlut {name}` needs PyTorch: pip install 'potlut[train]'")

    for _name in TORCH_COMMANDS:
        _needs_torch(_name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
