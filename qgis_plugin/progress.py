"""How far a job is, from the server's progress messages: one formula for the toolbar task and Processing.

Pure (no Qt), so it is tested on synthetic messages.  A job is counted in units: one per photo, and for a joint
job one more, the combined map made after the last photo (`protocol.job_units`).  The client gives every message a
`fraction` (the share of the job's units finished) when it knows the job's size; the server's stage says how far
the next unit is, and the heartbeats that repeat a stage creep the bar towards the next one, so a long stage such
as sampling never leaves the bar still.  How far a photo is at each stage is the server's `share` (its own last
photo's stage times) when it sends one, else STAGE_SHARE.
"""

from __future__ import annotations

from geoplonk_service import protocol as P

# How far one photo is when the server reports a stage, until it has timed a photo of the job's settings: a
# rough guess of each stage's share of a photo's work (sampling dominates).
STAGE_SHARE = {
    "queued": 0.0, "load": 0.02, "decode": 0.05, "embed": 0.15, "sample": 0.25, "localizability": 0.65,
    "density": 0.7, "regions": 0.8, "places": 0.88, "write": 0.95,
}  # fmt: skip

STAGE_ORDER = list(STAGE_SHARE)


def stage_progress(progress: dict, units: int, creep: float = 0.0) -> float:
    """Percent of the job done: the client's `fraction` counts finished units, and the stage adds how far the
    next one is (the server takes a request's photos one at a time; queued and load come before each turn; a
    joint map's own stages, from `joint` on, come after the last photo).

    `creep` (0-1): how far into the stage the job is, from the heartbeats that repeat it.  A message without a
    `fraction` counts as the first unit, so the client must be given the job's size."""
    stage = str(progress.get("stage") or "")
    creep = min(max(creep, 0.0), 1.0)
    timed = progress.get("share")
    if isinstance(timed, list) and len(timed) == 2 and all(P.is_number(v) for v in timed):
        start, end = (min(max(float(v), 0.0), 1.0) for v in timed)
        share = start + creep * max(end - start, 0.0)
    else:
        share = STAGE_SHARE.get(stage, 0.0)
        if stage in STAGE_SHARE and stage != STAGE_ORDER[-1]:
            share += creep * (STAGE_SHARE[STAGE_ORDER[STAGE_ORDER.index(stage) + 1]] - share)
    fraction = progress.get("fraction")
    fraction = float(fraction) if P.is_number(fraction) else 0.0
    return 100.0 * min(max(fraction, 0.0) + share / max(units, 1), 1.0)


class JobProgress:
    """The bar of one job: a percent that only moves forward, with heartbeats creeping through long stages."""

    def __init__(self, units: int) -> None:
        self.units = units
        self.percent = 0.0
        self._key: tuple | None = None
        self._creep = 0.0

    def update(self, progress: dict) -> float:
        """The bar after one progress message (a message that repeats the last one is a heartbeat)."""
        key = (progress.get("stage"), progress.get("index"), progress.get("done"), progress.get("fraction"))
        if key == self._key:  # the same stage still runs: move a third of the way that is left, never reaching
            self._creep += (0.9 - self._creep) / 3  # the next stage's share, which its own message brings
        else:
            self._key, self._creep = key, 0.0
        self.percent = max(self.percent, stage_progress(progress, self.units, self._creep))
        return self.percent

    def finished(self, count: int) -> float:
        """The bar once `count` units have their result (no progress message follows the last one)."""
        self.percent = max(self.percent, 100.0 * min(count / max(self.units, 1), 1.0))
        return self.percent
