"""The distribution's guidance w for one photo, as a model's calibration sets it.

One w need not fit every photo: a model's land views can want a wider map (a more negative w) than its sea
views. The photo's best-guess draws, made anyway at guidance 2, tell the two apart: the share of them that falls
on land is near 0 or near 1 for almost every photo. So a calibration may hold two values, `land_cfg` for photos
whose guess draws fall mostly on land and `distribution_cfg` for the rest, each chosen on its own group of tuning
photos (`geoplonk calibrate --by-land-share`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from geoplonk_service import protocol as P

LAND_SHARE_THRESHOLD = 0.5


@dataclass(frozen=True)
class Guidance:
    """w for every photo, or `land` for photos whose guess draws' land share reaches `threshold`."""

    cfg: float = 0.0
    land: float | None = None
    threshold: float = LAND_SHARE_THRESHOLD

    @property
    def needs_land_share(self) -> bool:
        return self.land is not None

    def for_land_share(self, share: float | None) -> float:
        """The photo's w, from the share (0..1) of its guess draws on land (None: no rule, or not known)."""
        if self.land is None:
            return self.cfg
        if share is None:
            raise ValueError("this guidance depends on the photo's land share; none was given")
        return self.land if share >= self.threshold else self.cfg

    def describe(self) -> str:
        """A short label for reports and raster tags: "cfg=-0.15" or "cfg=-0.2 land-looking, -0.125 others"."""
        if self.land is None:
            return f"cfg={self.cfg:g}"
        return f"cfg={self.land:g} land-looking, {self.cfg:g} others (guess land share >= {self.threshold:g})"


def _number(calibration: dict[str, Any], key: str, default: float | None, where: str) -> float | None:
    if key not in calibration:
        return default
    value = calibration[key]
    low, high = P.CFG.minimum, P.CFG.maximum
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{where}: calibration.{key} must be a number in [{low:g}, {high:g}], got {value!r} "
                         "(rerun `geoplonk calibrate` or remove the entry)")
    return float(value)


def guidance_from_calibration(calibration: Any, where: str = "geoplonk.json") -> Guidance:
    """The manifest's calibration entry as a Guidance: w = 0 without one (a published checkpoint)."""
    if not isinstance(calibration, dict):
        return Guidance()
    cfg = _number(calibration, "distribution_cfg", 0.0, where)
    land = _number(calibration, "land_cfg", None, where)
    threshold = calibration.get("land_share_threshold", LAND_SHARE_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"{where}: calibration.land_share_threshold must be a number in (0, 1], got {threshold!r}")
    return Guidance(cfg, land, float(threshold))
