"""Process-wide numeric settings for fast CPU inference."""

from __future__ import annotations

import torch


def configure_cpu_math() -> None:
    """Flush denormal floats to zero.

    Near the ends of the schedule the network's activations underflow into denormals, which
    x86 CPUs process ~100x slower: measured 12.7 s -> 1.3 s for 1024 samples x 32 Euler steps
    with the default model. Values this small are numerically irrelevant to the flow.
    """
    torch.set_flush_denormal(True)
