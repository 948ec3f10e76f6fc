"""Integer-only, multiplication-free P-LUT inference of .potlut files (METHODS §4).

``lower(graph)`` turns a file's graph into an integer program; ``IntEngine`` runs it fast
(C/AVX2 byte-shuffle or numba kernels); ``run_reference`` runs it in plain int64 numpy;
``op_counts`` counts its operations. numpy (and numba / a C compiler) only: a .potlut file
runs without torch. Accuracy on a data set is :mod:`potlut.evaluation`.
"""

from potlut.infer.engine import IntEngine, load_program
from potlut.infer.ops import op_counts
from potlut.infer.plut import PLut, UnsupportedModelError, build_plut
from potlut.infer.program import Program, lower
from potlut.infer.reference import run_reference

__all__ = [
    "IntEngine", "PLut", "Program", "UnsupportedModelError", "build_plut",
    "load_program", "lower", "op_counts", "run_reference",
]
