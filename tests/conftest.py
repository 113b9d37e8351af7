"""Suite-wide settings.

One intra-op thread: the suite's tensors are small, and on 2 shared cores torch's second
thread spins while waiting, which made small ops ten times slower (measured: LeNet forward +
backward with 16 chains at 146 steps/s on 1 thread, 12 on 2, under load). Subprocesses the
tests start get OMP_NUM_THREADS=1 from the Makefile for the same reason.
"""

import torch

torch.set_num_threads(1)
