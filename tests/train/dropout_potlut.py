"""`python -m potlut` with one extra model: SmallCNN with dropout before its classifier.

test_kill_resume.py runs this as a real process (and SIGKILLs it): dropout draws from
torch's global generator every step, so only a resume that restores it is exact.
"""

from __future__ import annotations

from torch import nn

from potlut.cli.main import main
from potlut.models import register
from potlut.models.small_cnn import SmallCNN


class DropoutCNN(SmallCNN):
    """SmallCNN (width 8) with ``Dropout(0.3)`` on the pooled features."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__(num_classes, in_channels, width=8)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))


if __name__ == "__main__":
    register("dropout_cnn", DropoutCNN)
    main()
