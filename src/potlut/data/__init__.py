"""Data sets from local paths only (no downloads): ``load("digits")``, ``load("mnist:DIR")``."""

from __future__ import annotations

from collections.abc import Callable

from potlut.data.bundle import DataBundle
from potlut.errors import PotlutDataError

_LOADERS: dict[str, Callable[[str], DataBundle]] = {}


def register(kind: str, loader: Callable[[str], DataBundle]) -> None:
    """Make ``--data KIND:PATH`` load with ``loader(PATH)``."""
    _LOADERS[kind] = loader


def _digits(path: str) -> DataBundle:
    from potlut.data.digits import load_digits_bundle

    return load_digits_bundle()


def _idx(kind: str) -> Callable[[str], DataBundle]:
    def load(path: str) -> DataBundle:
        from potlut.data.idx import load_idx_folder

        return load_idx_folder(path, name=kind)

    return load


register("digits", _digits)
for _kind in ("mnist", "fashion-mnist", "idx"):
    register(_kind, _idx(_kind))


def _lazy(module: str, func: str, **kw) -> Callable[[str], DataBundle]:
    """A loader that imports its module on first use (keeps ``import potlut`` light)."""

    def load(path: str) -> DataBundle:
        import importlib

        return getattr(importlib.import_module(module), func)(path, **kw)

    return load


register("cifar10", _lazy("potlut.data.cifar", "load_cifar10"))
register("cifar100", _lazy("potlut.data.cifar", "load_cifar100"))
register("folder", _lazy("potlut.data.folder", "load_folder"))
register("rafdb", _lazy("potlut.data.folder", "load_rafdb"))


def load(spec: str) -> DataBundle:
    """Load ``digits`` or ``KIND:PATH`` (e.g. ``mnist:/data/mnist``)."""
    kind, _, path = spec.partition(":")
    if kind not in _LOADERS:
        raise PotlutDataError(
            f"unknown data set {spec!r}; use digits or one of "
            + ", ".join(f"{k}:DIR" for k in sorted(_LOADERS) if k != "digits")
        )
    if kind != "digits" and not path:
        raise PotlutDataError(f"--data {kind} needs a folder: --data {kind}:DIR")
    return _LOADERS[kind](path)


__all__ = ["DataBundle", "load", "register"]
