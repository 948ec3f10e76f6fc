"""Cost and quality metrics of the paper: Top-1/Top-5, FIXOPS, weight size."""

from potlut.metrics.accuracy import evaluate, topk_correct
from potlut.metrics.fixops import fixops, layer_costs, total_macs
from potlut.metrics.size import weight_bits, weight_bytes

__all__ = [
    "evaluate", "fixops", "layer_costs", "topk_correct", "total_macs", "weight_bits",
    "weight_bytes",
]
