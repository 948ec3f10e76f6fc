"""Scheme name -> quantizer factory, so layers and ``convert`` never hard-code a scheme.

A factory takes ``(bits, role, signed)`` with role ``"weight"`` or ``"act"`` and returns a
:class:`~potlut.quant.base.Quantizer`. Baseline schemes register themselves here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from potlut.errors import PotlutConfigError
from potlut.quant.base import Quantizer
from potlut.quant.iospot import IOSPoTQuantizer, UniformPoTQuantizer

Factory = Callable[[int, str, bool], Quantizer]


@dataclass(frozen=True)
class SchemeInfo:
    """What a scheme needs from the layers around it."""

    factory: Factory
    weight_norm: bool = True  # normalize weights per layer before quantizing (METHODS §1.1)
    description: str = ""


_SCHEMES: dict[str, SchemeInfo] = {}


def register(
    name: str, factory: Factory, *, weight_norm: bool = True, description: str = ""
) -> None:
    """Make a scheme available to ``convert`` and the CLI under ``name``."""
    _SCHEMES[name] = SchemeInfo(factory, weight_norm, description)


def get(name: str) -> SchemeInfo:
    """Look a scheme up; unknown names are a user error listing the known ones."""
    _load_builtin()
    if name not in _SCHEMES:
        known = ", ".join(sorted(_SCHEMES))
        raise PotlutConfigError(f"unknown quantization scheme {name!r}; choose one of: {known}")
    return _SCHEMES[name]


def names() -> list[str]:
    """All registered scheme names, sorted."""
    _load_builtin()
    return sorted(_SCHEMES)


def make(name: str, bits: int, role: str, signed: bool = True) -> Quantizer:
    """Build a quantizer of scheme ``name`` for a weight or activation tensor."""
    return get(name).factory(bits, role, signed)


_loaded = False


def _load_builtin() -> None:
    """Import the baseline modules once; each calls :func:`register` on import."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for mod in _BASELINE_MODULES:
        try:
            importlib.import_module(f"potlut.quant.{mod}")
        except ModuleNotFoundError as exc:  # a baseline not written yet is simply absent
            if exc.name != f"potlut.quant.{mod}":
                raise


# Baseline schemes live in their own modules and register on import.
_BASELINE_MODULES: list[str] = [
    "apot", "lqnet", "deepshift", "pact", "lsq", "bmfloat",
]

def _signed(role: str, signed: bool) -> bool:
    """Weights are always signed; activations as the spec says."""
    return True if role == "weight" else signed


register(
    "iospot",
    lambda bits, role, signed: IOSPoTQuantizer(bits, signed=_signed(role, signed)),
    description="IOS-PoT (He et al. 2024): levels {0, ±2^-j}, power-of-two scale",
)
register(
    "fixed",
    lambda bits, role, signed: UniformPoTQuantizer(bits, signed=_signed(role, signed)),
    weight_norm=False,
    description="fixed point with a power-of-two step (first/last layers)",
)
