"""QAT of a 4-bit digits CNN on 256 images (4 global batches of 64 per epoch), one process or
under torchrun; rank 0 saves the weights and the distribution-loss coefficients to argv[1]."""

import os
import sys

import torch
from torch.utils.data import Subset

from potlut import data, models
from potlut.data.bundle import DataBundle
from potlut.nn import QuantSpec, quantize
from potlut.train import TrainConfig, fit
from potlut.train import distributed as pdist

torch.set_num_threads(1)
pdist.init_from_env("cpu")
full = data.load("digits")
bundle = DataBundle("digits", Subset(full.train, range(256)), Subset(full.test, range(64)),
                    full.num_classes, full.in_shape)
torch.manual_seed(0)
fp32 = models.build("small_cnn", bundle.num_classes, bundle.in_channels)
q = quantize(fp32, QuantSpec(bits=4), calibration=bundle.calibration_batch())
# the regularizer at 10 % of the task gradient (the default is 1 %): the lambda bug this
# checks then moves the weights 10x more, and the weights stay off the code thresholds, where
# the all-reduce's float rounding can flip a code (at 1 %: 2.1e-5 of features.0's size)
cfg = TrainConfig(epochs=int(sys.argv[2]), batch_size=64, device="cpu", sync_bn=True, seed=0,
                  dist_ratio=0.1)
hist = fit(q, bundle, cfg, stage="qat", progress=False)
if pdist.is_main():
    torch.save({"model": q.state_dict(), "lams": [e.dist_lambda for e in hist.epochs]},
               sys.argv[1])
pdist.barrier()  # leave together: a rank tearing gloo down while the other saves can abort
pdist.shutdown()
# skip interpreter teardown: a gloo thread still joinable when C++ statics are destroyed
# aborted a rank now and then ("terminate called without an active exception") after
# everything above had finished
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
