"""The typer application and the rule for errors: one line, exit code 2, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from potlut.errors import PotlutError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="potlut: power-of-two QAT, compressed model files, multiplication-free P-LUT inference.",
)

EXIT_USER_ERROR = 2
TRAIN_EXTRAS = ("torch", "sklearn", "matplotlib", "PIL")  # modules of `potlut[train]`


def fail(message: str) -> None:
    """Print ``potlut: error: message`` on stderr and exit with code 2."""
    print(f"potlut: error: {message}", file=sys.stderr)
    raise typer.Exit(EXIT_USER_ERROR)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`PotlutError` (and a Ctrl-C) into a one-line message and exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PotlutError as exc:
            fail(str(exc))
        except ModuleNotFoundError as exc:  # a torch-only step on an inference-only install
            if exc.name not in TRAIN_EXTRAS:
                raise
            fail(f"this command needs {exc.name}, which is not installed: "
                 "pip install 'potlut[train]'")
        except KeyboardInterrupt:
            print("potlut: interrupted; finished epochs are checkpointed (use --resume)",
                  file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="print the version and exit"),
) -> None:
    """potlut: power-of-two QAT, compressed model files, multiplication-free P-LUT inference."""
    if version:
        from potlut import __version__

        print(__version__)
        raise typer.Exit(0)
