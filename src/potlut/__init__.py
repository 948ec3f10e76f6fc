"""potlut: power-of-two quantization, compressed model files and P-LUT inference for edge CNNs."""

from potlut.errors import PotlutError

__version__ = "0.1.0"
__all__ = ["PotlutError", "__version__"]
