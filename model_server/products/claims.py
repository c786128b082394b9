"""Checking a claimed location against a photo's map: how plausible the model finds it, in words an
analyst can quote.

The claim's credible level is the smallest level whose credible region holds it: the share of the map's
draws (importance-weighted under a prior) that are denser than the claim's cell, or, for a map without
draws, the probability of the cells denser than it.  It is kept consistent with the regions the map shows
(a claim inside the drawn 90 % region never gets a level above 0.9).  Its density is given relative to the
best guess's, and its distance to each drawn region is measured to the region's nearest cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geodesy import haversine_km
from .grid import Grid
from .maps import ProbabilityMap

# The verdict by credible level: (highest level, words).
VERDICTS = ((0.5, "likely under the model"), (0.9, "plausible under the model"),
            (0.99, "unlikely under the model"), (1.0, "very unlikely under the model"))


@dataclass(frozen=True)
class Claim:
    lat: float
    lon: float
    source: str = "user"  # exif, click, layer or user (protocol.CLAIM_SOURCES)
    label: str = ""


@dataclass
class ClaimCheck:
    """One claim against one map."""

    claim: Claim
    credible_level: float  # the smallest credible level whose region holds the claim
    levels: list[float]
    inside: list[bool]  # inside each drawn region
    distance_km: list[float]  # to each drawn region's nearest cell (0 inside)
    density_ratio: float  # density at the claim / density at the best guess

    @property
    def verdict(self) -> str:
        return next(words for top, words in VERDICTS if self.credible_level <= top)

    @property
    def words(self) -> str:
        """The verdict as a sentence: 'unlikely under the model: outside the 97 % region (inside the 99 %
        region); density 0.4 % of the best guess's; 412 km from the 90 % region'."""
        parts = [f"{self.verdict}: {level_words(self.credible_level)}"]
        held = [lv for lv, inside in zip(self.levels, self.inside, strict=True) if inside]
        parts[0] += f" (inside the {percent(min(held))} region)" if held else \
            f" (outside every region drawn, up to {percent(max(self.levels))})"
        parts.append(ratio_words(self.density_ratio))
        far = [f"{km:,.0f} km from the {percent(lv)} region"
               for lv, inside, km in zip(self.levels, self.inside, self.distance_km, strict=True)
               if not inside and math.isfinite(km)]
        if far:
            parts.append(", ".join(reversed(far)))
        return "; ".join(parts)

    def summary(self) -> dict[str, Any]:
        return {
            "lat": self.claim.lat, "lon": self.claim.lon, "source": self.claim.source, "label": self.claim.label,
            "credible_level": self.credible_level,
            "regions": [{"level": lv, "inside": inside, "distance_km": km if math.isfinite(km) else None}
                        for lv, inside, km in zip(self.levels, self.inside, self.distance_km, strict=True)],
            "density_ratio": self.density_ratio,
            "verdict": self.verdict,
            "words": self.words,
        }


def percent(level: float) -> str:
    return f"{level * 100:g} %"


def level_words(level: float) -> str:
    """'outside the 97 % region' (rounded down: the claim is outside that region), 'inside the 1 % region'."""
    if level >= 1.0:
        return "outside every credible region (less dense than all the model's draws)"
    pct = level * 100
    shown = math.floor(pct * 10) / 10 if pct >= 99 else math.floor(pct)
    if shown < 1:
        return "inside the 1 % region, among the model's most likely places"
    return f"outside the {shown:g} % region"


def ratio_words(ratio: float) -> str:
    """'density 40 % of the best guess's', 'density 4.5e-08 x the best guess's'."""
    if 0.001 <= ratio < 0.995:
        return f"density {ratio * 100:.2g} % of the best guess's"
    return f"density {ratio:.2g} x the best guess's"


def claim_level(density: float, pmap: ProbabilityMap) -> float:
    """The smallest credible level whose region (by the map's own rule) holds a point of this density."""
    if pmap.at_samples is not None and len(pmap.at_samples):
        w = np.ones(len(pmap.at_samples)) if pmap.sample_weights is None else pmap.sample_weights
        return float(w[pmap.at_samples > density].sum() / w.sum())
    prob = pmap.raster.prob
    return float(prob[pmap.raster.density_sr() > density].sum() / prob.sum())


def distance_to_cells_km(lat: float, lon: float, mask: np.ndarray, grid: Grid) -> float:
    """Great-circle km from (lat, lon) to the nearest point of the mask's cells (0 inside; inf when empty):
    the point clamped into each cell's latitude band and longitude span (longitude wraps)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return math.inf
    r, c = grid.cell_of(np.array([lat]), np.array([lon]))
    if mask[r[0], c[0]]:
        return 0.0
    res = grid.resolution
    north = grid.north - rows * res
    west = grid.west + cols * res
    near_lat = np.clip(lat, north - res, north)
    past_west = (lon - west) % 360.0
    near_lon = np.where(past_west <= res, lon, np.where(past_west - res < 360.0 - past_west, west + res, west))
    return float(np.min(haversine_km(lat, lon, near_lat, near_lon)))


def check_claims(claims: Sequence[Claim], pmap: ProbabilityMap, levels: Sequence[float],
                 masks: Sequence[np.ndarray], best: tuple[float, float]) -> list[ClaimCheck]:
    """Each claim against the map whose credible regions (one mask per level) are drawn, and its best guess."""
    grid = pmap.raster.grid
    best_density = pmap.density_sr_at(*best)
    checks = []
    for claim in claims:
        rows, cols = grid.cell_of(np.array([claim.lat]), np.array([claim.lon]))
        density = pmap.density_sr_at(claim.lat, claim.lon)
        inside = [bool(m[rows[0], cols[0]]) for m in masks]
        level = claim_level(density, pmap)
        # agree with the regions drawn: above every level whose region misses it, within the least that holds it
        level = max([level, *(lv for lv, ins in zip(levels, inside, strict=True) if not ins)])
        level = min([level, *(lv for lv, ins in zip(levels, inside, strict=True) if ins)])
        distances = [distance_to_cells_km(claim.lat, claim.lon, m, grid) for m in masks]
        checks.append(ClaimCheck(claim, level, [float(v) for v in levels], inside, distances,
                                 density / best_density if best_density > 0 else math.inf))
    return checks
