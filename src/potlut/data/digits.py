"""scikit-learn's digits (8x8, 10 classes, 1797 images): the embedded default data set.

Ships inside scikit-learn, so ``potlut run`` works offline. The split is fixed and
stratified (70% train / 30% test, ``random_state=0``) so results are comparable.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from potlut.data.bundle import DataBundle, standardize

TEST_FRACTION = 0.3
SPLIT_SEED = 0


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed split: raw images (uint8, 0..16, ``[N, 1, 8, 8]``) and labels,
    ``(x_train, x_test, y_train, y_test)``; the firmware harness reads the same pixels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    y = d.target.astype(np.int64)
    return train_test_split(d.images.astype(np.uint8)[:, None], y, test_size=TEST_FRACTION,
                            random_state=SPLIT_SEED, stratify=y)


def load_digits_bundle() -> DataBundle:
    """The digits data as a :class:`DataBundle` of float tensors, standardized."""
    xtr, xte, ytr, yte = split()
    xtr_t, xte_t = standardize(torch.from_numpy(xtr.astype(np.float32) / 16.0),
                               torch.from_numpy(xte.astype(np.float32) / 16.0))
    return DataBundle(
        name="digits",
        train=TensorDataset(xtr_t, torch.from_numpy(ytr)),
        test=TensorDataset(xte_t, torch.from_numpy(yte)),
        num_classes=10,
        in_shape=(1, 8, 8),
    )
