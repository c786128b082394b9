"""Engine tests run single-threaded: on this shared 2-core machine OpenMP threads spin against
other developers' jobs and a tiny network ran 20x slower with 2 threads than with 1.
Set GEOPLONK_TEST_THREADS to change it."""

import os

import torch

torch.set_num_threads(int(os.environ.get("GEOPLONK_TEST_THREADS", "1")))
