"""Several photos of one place: the product of their maps, renormalised on the sphere, and how much each
photo agrees with it.

The product is tempered (JOINT_ALPHA) and taken over each photo's kernel density map (the map it shows on
its own), not over the flow's exact log-density: the exact density on a global grid costs one
probability-flow ODE per cell (a million cells at 0.25 degrees, minutes per photo on a CPU), while the
kernel map is already drawn for each photo and is what the analyst compares it with.  Each map keeps its
uniform floor (1e-4 of the mass), so photos that disagree give a product that still sums to 1 and says
where they least disagree; the contributions say which photo pulls away.

Only the running sum of the log-densities (one raster) and each photo's draws are kept until the product
is made: a photo's contribution is evaluated from its draws where the product has its mass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geodesy import latlon_to_xyz
from .claims import level_words
from .grid import Grid
from .kde import kde_log_density
from .maps import ProbabilityMap, product_map

# The product is tempered: p(x) proportional to (prod_i p_i(x))^t with t = n^-JOINT_ALPHA for n photos.  Photos of
# one place are not independent views (the same landscape, the model's same blind spots): the plain product
# (alpha 0) counts their shared evidence n times and its regions miss the place far more often than each photo's
# own (docs/analyst-tools.md measures it); alpha 1 is the geometric mean, as wide as a typical single map.
JOINT_ALPHA = 0.75
# The product's cells a contribution is measured on: those holding this much of its mass, at most MAX_CELLS.
KL_MASS = 0.999
KL_MAX_CELLS = 20_000


@dataclass
class PhotoPart:
    """What one photo leaves for the product: its draws and its map's kernel, to evaluate it anywhere."""

    index: int
    name: str
    samples: np.ndarray  # (n, 3)
    kappas: np.ndarray  # (n,)
    uniform_weight: float
    normaliser: float
    at_samples: np.ndarray | None  # leave-one-out density of each draw, for its credible levels

    def log_density_sr(self, points: np.ndarray) -> np.ndarray:
        """The photo's map's log density per steradian at unit vectors (M, 3), as its raster gives it."""
        return kde_log_density(points, self.samples, self.kappas, self.uniform_weight) - math.log(self.normaliser)


@dataclass
class JointAccumulator:
    """The running sum of the photos' log-densities on one grid, and the photos' parts."""

    grid: Grid
    log_sum: np.ndarray | None = None
    parts: list[PhotoPart] = field(default_factory=list)
    pilot_kappas: list[float] = field(default_factory=list)

    def add(self, index: int, name: str, pmap: ProbabilityMap, samples: np.ndarray) -> None:
        """A photo's own map (before any area-of-interest prior: the product takes the prior once)."""
        raster = pmap.raster
        log_density = np.log(raster.density_sr())
        self.log_sum = log_density if self.log_sum is None else self.log_sum + log_density
        self.parts.append(PhotoPart(index, name, np.asarray(samples, np.float64), raster.sample_kappas(len(samples)),
                                    raster.uniform_weight, raster.normaliser, pmap.at_samples))
        self.pilot_kappas.append(raster.kappa)

    def combined(self, alpha: float = JOINT_ALPHA) -> ProbabilityMap:
        """The tempered product map, exponent joint_exponent(n, alpha) (its `kappa`: the photos' median pilot
        bandwidth, for the record)."""
        if self.log_sum is None:
            raise ValueError("no photo of the request could be located: there is no joint map")
        return product_map(self.log_sum * joint_exponent(len(self.parts), alpha), self.grid,
                           float(np.median(self.pilot_kappas)), self.parts[0].uniform_weight)


def joint_exponent(n: int, alpha: float = JOINT_ALPHA) -> float:
    """The exponent t of the product of n maps: n^-alpha (1 for one photo)."""
    return float(max(n, 1)) ** -alpha


def map_localizability(pmap: ProbabilityMap) -> float:
    """The reference's localizability of a map without draws: its mean log-density (nats per steradian,
    the negative entropy) / (4 pi ln 2); uniform gives -0.291, as for a photo."""
    prob = pmap.raster.prob
    keep = prob > 0
    mean_log = float(np.sum(prob[keep] * np.log(pmap.raster.density_sr()[keep])))
    return mean_log / (4 * math.pi * math.log(2))


def contributions(joint: ProbabilityMap, best: tuple[float, float], parts: list[PhotoPart]) -> list[dict[str, Any]]:
    """Per photo: its own map's log-density at the joint best guess, the credible level of its own map that
    holds the joint best guess (with the words), and KL(joint || its map) in nats over the product's mass."""
    grid = joint.raster.grid
    rows, cols = grid.cell_of(np.array([best[0]]), np.array([best[1]]))
    guess = latlon_to_xyz(grid.lat_centers()[rows], grid.lon_centers()[cols])
    flat = joint.raster.prob.ravel()
    order = np.argsort(flat)[::-1]
    count = min(int(np.searchsorted(np.cumsum(flat[order]), KL_MASS)) + 1, KL_MAX_CELLS, flat.size)
    top = order[:count]
    r, c = np.unravel_index(top, joint.raster.prob.shape)
    centres = latlon_to_xyz(grid.lat_centers()[r], grid.lon_centers()[c])
    weights = flat[top] / flat[top].sum()
    log_joint = np.log(joint.raster.density_sr()[r, c])
    out = []
    for part in parts:
        at_guess = float(part.log_density_sr(guess)[0])
        level = None if part.at_samples is None else float(np.mean(part.at_samples > math.exp(at_guess)))
        kl = float(np.sum(weights * (log_joint - part.log_density_sr(centres))))
        out.append({
            "index": part.index, "name": part.name, "log_density_at_guess": at_guess,
            "level_at_guess": level, "kl_nats": max(kl, 0.0),
            "words": f"{part.name}: the joint best guess lies "
                     + (level_words(level) if level is not None else "off its draws") + " of this photo's own map",
        })
    return out
