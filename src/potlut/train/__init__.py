"""Training: the paper's recipe, distribution loss, checkpoint/resume."""

from potlut.train.loop import History, TrainConfig, fit, pick_device
from potlut.train.losses import DistributionLoss

__all__ = ["DistributionLoss", "History", "TrainConfig", "fit", "pick_device"]
