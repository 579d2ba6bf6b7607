"""Tests run with one torch intra-op thread: on a shared 2-core machine two OpenMP threads spin-wait for
each other whenever anything else runs, which makes tiny steps 10x slower and timing-based tests flaky."""

import torch

torch.set_num_threads(1)
