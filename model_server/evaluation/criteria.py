"""How `geoplonk calibrate` chooses the distribution guidance w from the scores of a grid of w
(calibration.py computes the scores): by the least NLL of the held-out truths, or by how near the credible
regions hold their share of them. Pure functions of the scores, light enough for the command line to import.
"""

from __future__ import annotations

from collections.abc import Sequence

# w in [-1, 0]: -1 is the unconditional flow, below it the field points away from the photo.
MIN_CFG = -1.0
# dopri5's atol = rtol for the truths' log-density (likelihood.truth_and_draws_log_density): within 0.12 nats of
# a converged solve where the default model puts little (log p -20 on average), where rk4 in 16 steps was 2 nats
# above it on average and 14 at most (benchmarks/check_log_density_error.py).
TRUTH_TOLERANCE = 1e-5
# Guidance values tried by default: the over-confidence of flows trained here is mended well inside this range.
DEFAULT_GRID = (-0.3, -0.25, -0.2, -0.15, -0.1, -0.05, 0.0)
# How each criterion scores a w; the text is recorded in the manifest.
CRITERIA = {
    "nll": "nll: least mean NLL (nats/sr) of the held-out true locations",
    "coverage": "coverage: the 50 and 90 % credible regions (exact density) holding nearest their share of truths; "
                "ties by NLL",
    "map": "map: the 50 and 90 % credible regions of the exact density and of the drawn map (the server's kernel "
           "density raster) holding nearest their share of truths, both together; ties by NLL",
    "map-land": "map-land: as map, scored on all tiles and again on the land tiles alone (truth on land by "
                "global-land-mask), the misses of both summed; ties by NLL",
}
# Which regions each coverage criterion scores (coverage_error's kinds).  A model can hold its level on all
# tiles, most of them sea, and miss it on land, where the analysts' photos are: map-land scores both.
COVERAGE_KINDS = {"coverage": ("coverage",), "map": ("coverage", "map_coverage"),
                  "map-land": ("coverage", "map_coverage", "land_coverage", "land_map_coverage")}
# The criteria that draw maps (score_guidance's second part).
MAP_CRITERIA = ("map", "map-land")


def best_cfg(nll_by_cfg: dict[float, float]) -> float:
    """The w of least NLL; ties go to the one nearest 0 (the model as trained)."""
    return min(nll_by_cfg, key=lambda w: (nll_by_cfg[w], abs(w)))


def coverage_error(score: dict, levels: Sequence[float] = (0.5, 0.9), kinds: Sequence[str] = ("coverage",)) -> float:
    """Sum of squared misses of the nominal levels (coverage_50 against 0.5, ...), over each kind of
    region scored ("coverage": the exact density's, "map_coverage": the drawn map's)."""
    return sum((score[f"{kind}_{round(100 * lv)}"] - lv) ** 2 for kind in kinds for lv in levels)


def best_cfg_by_coverage(
    scores: dict[float, dict], levels: Sequence[float] = (0.5, 0.9), kinds: Sequence[str] = ("coverage",)
) -> float:
    """The w whose credible regions hold nearest their level of truths; ties by NLL, then nearest 0."""
    return min(scores, key=lambda w: (round(coverage_error(scores[w], levels, kinds), 9), scores[w]["nll"], abs(w)))
