"""Scheme name -> quantizer factory, so layers and ``convert`` never hard-code a scheme.

A factory takes ``(bits, role, signed)`` with role ``"weight"`` or ``"act"`` and returns a
:class:`~potlut.quant.base.Quantizer`. Baseline schemes register themselves here; what a
scheme *is* (levels, signs, weight normalization, how the engine runs it) is declared once
in :mod:`potlut.schemes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from potlut import schemes
from potlut.errors import PotlutConfigError
from potlut.quant.base import Quantizer
from potlut.quant.iospot import IOSPoTQuantizer, UniformPoTQuantizer

Factory = Callable[[int, str, bool], Quantizer]


@dataclass(frozen=True)
class SchemeInfo:
    """A scheme's quantizer factory and its declared facts."""

    factory: Factory
    facts: schemes.Scheme

    @property
    def weight_norm(self) -> bool:
        """Normalize weights per layer before quantizing (METHODS §1.1)."""
        return self.facts.weight_norm


_SCHEMES: dict[str, SchemeInfo] = {}


def register(name: str, factory: Factory) -> None:
    """Make scheme ``name`` (declared in :mod:`potlut.schemes`) available to ``convert``."""
    _SCHEMES[name] = SchemeInfo(factory, schemes.get(name))


def get(name: str) -> SchemeInfo:
    """Look a scheme (or an older name of one) up; unknown names are a user error."""
    _load_builtin()
    facts = schemes.lookup(name)
    if facts is None or facts.name not in _SCHEMES:
        known = ", ".join(sorted(_SCHEMES))
        raise PotlutConfigError(f"unknown quantization scheme {name!r}; choose one of: {known}")
    return _SCHEMES[facts.name]


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
    "apot", "lqnet", "deepshift", "pact", "lsq", "bmfloat", "lsbinary", "alq", "sq", "esb",
    "srq",
]


def _signed(role: str, signed: bool) -> bool:
    """Weights are always signed; activations as the spec says."""
    return True if role == "weight" else signed


register("iospot", lambda bits, role, signed: IOSPoTQuantizer(bits, signed=_signed(role, signed)))
register("fixedpoint",
         lambda bits, role, signed: UniformPoTQuantizer(bits, signed=_signed(role, signed)))
