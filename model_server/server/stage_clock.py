"""How far a photo is when each of its stages starts and ends, from the stage times of the server's last photo
with the same settings: a progress bar then moves with the machine's own time (sampling's share of a photo differs
widely between CPUs with and without bf16 units: docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any

from geoplonk_service.protocol import PHOTO_STAGES

# The options that change how long a stage takes, beside the model. The request's `cfg`, not each photo's: a
# model's land rule draws some photos at another w (guided: about twice the sampling), and an area of interest or
# claims add a little; such photos take the shares of the last photo of the request's settings.
COST_OPTIONS = ("samples", "steps", "solver", "cfg", "precision", "resolution", "top_k")
# Settings remembered, the least recently timed forgotten first.
MAX_KEYS = 32


def cost_key(model_name: str, options: dict[str, Any]) -> tuple:
    """Photos with the same key take their stages in about the same shares of their time."""
    return (model_name, *(str(options.get(name)) for name in COST_OPTIONS))


class StageClock:
    """The stage times of the last photo of each cost key; the worker thread alone uses it."""

    def __init__(self) -> None:
        self._seconds: dict[tuple, dict[str, float]] = {}  # in the order last timed

    def record(self, key: tuple, timings: dict[str, Any]) -> None:
        seconds = {stage: float(timings.get(stage) or 0.0) for stage in PHOTO_STAGES}
        if sum(seconds.values()) > 0:
            self._seconds.pop(key, None)
            self._seconds[key] = seconds
            while len(self._seconds) > MAX_KEYS:
                del self._seconds[next(iter(self._seconds))]

    def share(self, key: tuple, stage: str) -> list[float] | None:
        """[start, end]: the photo's share done when `stage` starts and when it ends; None before a first photo
        of this key has ended, or for a stage that is not a photo's."""
        seconds = self._seconds.get(key)
        if seconds is None or stage not in seconds:
            return None
        total = sum(seconds.values())
        start = sum(seconds[s] for s in PHOTO_STAGES[: PHOTO_STAGES.index(stage)])
        return [round(start / total, 4), round((start + seconds[stage]) / total, 4)]
