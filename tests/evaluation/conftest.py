"""Evaluation tests run single-threaded, as the engine's (tests/engine/conftest.py says why)."""

import os

import torch

torch.set_num_threads(int(os.environ.get("GEOPLONK_TEST_THREADS", "1")))
