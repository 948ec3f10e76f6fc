"""Model zoo in plain PyTorch (no torchvision): ``build(name, num_classes, in_channels)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from potlut.errors import PotlutConfigError
from potlut.models.lenet import LeNet5
from potlut.models.resnet_cifar import resnet20, resnet56
from potlut.models.small_cnn import SmallCNN

_MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": lambda num_classes, in_channels: SmallCNN(num_classes, in_channels),
    "lenet5": lambda num_classes, in_channels: LeNet5(num_classes, in_channels),
    "resnet20": resnet20,
    "resnet56": resnet56,
}


def _lazy(module: str, func: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        import importlib

        return getattr(importlib.import_module(module), func)(num_classes, in_channels)

    return build


_MODELS["resnet18"] = _lazy("potlut.models.resnet", "resnet18")
_MODELS["resnet18_cifar"] = _lazy("potlut.models.resnet", "resnet18_cifar")
_MODELS["squeezenet1_1"] = _lazy("potlut.models.squeezenet", "squeezenet1_1")
_MODELS["shufflenet_v2_x1_0"] = _lazy("potlut.models.shufflenetv2", "shufflenet_v2_x1_0")
_MODELS["scn"] = _lazy("potlut.models.scn", "scn")


def register(name: str, builder: Callable[..., nn.Module]) -> None:
    """Add a model builder ``builder(num_classes, in_channels) -> nn.Module``."""
    _MODELS[name] = builder


def names() -> list[str]:
    return sorted(_MODELS)


def check_name(name: str) -> None:
    """Raise a user error listing the known models unless ``name`` is one."""
    if name not in _MODELS:
        raise PotlutConfigError(f"unknown model {name!r}; choose one of: {', '.join(names())}")


def default_for(in_shape: tuple[int, ...]) -> str:
    """The default model for inputs of shape ``(C, H, W)``: LeNet-5 for 28x28, else small_cnn.

    small_cnn (3 convs and global pooling) reaches only ~96 % on MNIST-format data; LeNet-5
    is the baseline an MNIST user expects (~99 %).
    """
    return "lenet5" if tuple(in_shape[-2:]) == (28, 28) else "small_cnn"


def build(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Instantiate a model by name (user error listing the known names otherwise)."""
    check_name(name)
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels)
