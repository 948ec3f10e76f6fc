"""Entry point of the ``potlut`` console command; each subcommand lives in its own module."""

from __future__ import annotations

from potlut.cli import compare as _compare  # noqa: F401  (registers `potlut compare`)
from potlut.cli import compress as _compress  # noqa: F401  (registers compress, inspect)
from potlut.cli import hw as _hw  # noqa: F401  (registers `potlut export-rtl`)
from potlut.cli import infer as _infer  # noqa: F401  (registers `potlut infer`)
from potlut.cli import report as _report  # noqa: F401  (registers `potlut report`)
from potlut.cli import run as _run  # noqa: F401  (registers `potlut run`)
from potlut.cli import train as _train  # noqa: F401  (registers `potlut train`)
from potlut.cli.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
