"""Process-wide numeric settings for fast CPU inference."""

from __future__ import annotations

import torch


def configure_cpu_math() -> None:
    """Flush denormal floats to zero.

    Near the ends of the schedule the network's activations underflow into denormals, which
    x86 CPUs process many times slower than normal floats, and the sampler with them. Values this small
    are numerically irrelevant to the flow.
    """
    torch.set_flush_denormal(True)
