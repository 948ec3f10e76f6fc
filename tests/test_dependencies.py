"""The dependency arrows of DESIGN.md, read from every module's imports (ast, not runtime).

The file format and the integer engine import numpy (numba, the C backend), never torch or
training, data or model code, so a .potlut file runs on a machine without torch; a
quantizer knows no training loop or command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import potlut

SRC = Path(potlut.__file__).parent

# package -> module prefixes it must not import (function-level imports count too)
TORCH_SIDE = ("torch", "potlut.train", "potlut.nn", "potlut.models", "potlut.data", "potlut.cli",
              "potlut.quant", "potlut.pipeline", "potlut.compare", "potlut.report",
              "potlut.evaluation", "potlut.metrics", "sklearn", "brevitas")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "compress": TORCH_SIDE,
    "infer": TORCH_SIDE,
    "deploy": TORCH_SIDE,
    "quant": ("potlut.train", "potlut.cli", "potlut.pipeline", "potlut.compare"),
    # the image codec is its own pipeline: it shares file and checkpoint helpers only
    "codec": ("potlut.cli", "potlut.pipeline", "potlut.quant", "potlut.nn", "potlut.compress",
              "potlut.infer", "potlut.deploy", "potlut.models"),
}


def module_name(path: Path) -> str:
    """``potlut.infer.engine`` for src/potlut/infer/engine.py (packages end in ``__init__``)."""
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts)


def imports(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import statement of ``module``'s source."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                parent = module.split(".")[: -node.level]
                base = ".".join(parent + ([base] if base else []))
            out += [(node.lineno, f"{base}.{a.name}" if base else a.name) for a in node.names]
    return out


def violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        top = path.relative_to(SRC).parts[0]
        for line, mod in imports(path.read_text(), module_name(path)):
            for banned in FORBIDDEN.get(top, ()):
                if mod == banned or mod.startswith(banned + "."):
                    bad.append(f"{path.relative_to(SRC)}:{line} imports {mod}")
    return bad


def test_dependency_arrows_hold() -> None:
    assert violations() == []


def test_the_checker_sees_every_kind_of_import() -> None:
    """Plain, from, relative and function-level imports are found (so [] above means clean)."""
    src = ("import numpy as np\nfrom torch import nn\nfrom ..train import loop\n"
           "from . import plut\n\ndef f():\n    import potlut.data.cifar\n")
    assert imports(src, "potlut.infer.engine") == [
        (1, "numpy"), (2, "torch.nn"), (3, "potlut.train.loop"), (4, "potlut.infer.plut"),
        (7, "potlut.data.cifar")]
    assert imports("from .. import errors\n", "potlut.infer.kernels.__init__") == [
        (1, "potlut.infer.errors")]
    n_checked = [p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] in FORBIDDEN]
    assert len(n_checked) >= 25
