"""Shared test settings: one torch thread, so tiny models do not pay for thread hand-offs
(and tests running beside other work on 2 cores stay predictable)."""

import torch

torch.set_num_threads(1)
