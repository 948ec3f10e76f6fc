"""The .potlut model file: model graph, weight sharing + S-Huff / rANS, LZMA container,
bounds. numpy only; a torch model is written with :func:`potlut.nn.export.compress_model`.
"""

from potlut.compress.bounds import file_stats
from potlut.compress.container import CODERS, FileInfo, decode, encode, load, read, save
from potlut.compress.graph import ModelGraph, Node, dequantized_weights

__all__ = [
    "CODERS", "FileInfo", "ModelGraph", "Node", "decode", "dequantized_weights", "encode",
    "file_stats", "load", "read", "save",
]
