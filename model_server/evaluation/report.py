"""The evaluation report: one row of figures per method, each with its bootstrap interval, on all tiles and on
land tiles; the paired comparison of the flow's best guess with retrieval; the report document and its tables."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .bootstrap import LEVEL, RESAMPLES, SEED, column_intervals, paired_difference_interval
from .metrics import (
    COVERAGE_LEVELS,
    THRESHOLDS_KM,
    coverage_shares,
    distance_summary,
    geoscore,
    nll_summary,
    spearman,
)

NLL_UNIT = "nats per steradian (uniform on the sphere = log 4 pi = 2.531)"
INTERVALS = {"kind": "percentile bootstrap over tiles", "level": LEVEL, "resamples": RESAMPLES, "seed": SEED,
             "keys": "<figure>_ci: [lo, hi]"}
LAND_MASK = "global-land-mask (1 km) at the tile's true location"
# (a, b): the difference a - b of GeoScore, paired by tile, is reported when both were scored.
COMPARISONS = (("flow_guess", "retrieval_kde"),)


@dataclass
class MethodScores:
    """One method's figures per tile: its row is computed from them on all tiles or on any subset."""

    key: str  # short name: per_image's errors and the comparisons name methods by it
    method: str
    dist_km: np.ndarray | None = None  # (E,) error of its guess
    logp: np.ndarray | None = None  # (E,) log density of the truth, per steradian
    inside: np.ndarray | None = None  # (E, len(levels)) truth inside each credible region
    levels: tuple[float, ...] = COVERAGE_LEVELS
    localizability: np.ndarray | None = None  # (E,) for its rank correlation with the error
    extra: dict = field(default_factory=dict)  # fields of the row that do not depend on the tiles

    @property
    def n(self) -> int:
        for a in (self.dist_km, self.logp, self.inside):
            if a is not None:
                return len(a)
        return 0

    def subset(self, tiles: np.ndarray) -> MethodScores:
        """The same method on the tiles where `tiles` (bool, (E,)) holds."""
        def pick(a):
            return None if a is None else np.asarray(a)[tiles]
        return replace(self, dist_km=pick(self.dist_km), logp=pick(self.logp), inside=pick(self.inside),
                       localizability=pick(self.localizability))


def _with_intervals(figures: dict, intervals: dict) -> dict:
    """Each figure followed by its interval, where it has one."""
    out = {}
    for key, value in figures.items():
        out[key] = value
        if f"{key}_ci" in intervals:
            out[f"{key}_ci"] = intervals[f"{key}_ci"]
    return out


def _mean_columns(s: MethodScores) -> dict[str, np.ndarray]:
    """The per-tile values whose mean is a figure of the row."""
    cols: dict[str, np.ndarray] = {}
    if s.dist_km is not None:
        d = np.asarray(s.dist_km, dtype=np.float64)
        cols["mean_km"] = d
        cols.update({f"acc_{t}km": (d <= t).astype(np.float64) for t in THRESHOLDS_KM})
        cols["geoscore"] = geoscore(d)
    if s.logp is not None:
        cols["nll_mean"] = -np.asarray(s.logp, dtype=np.float64)
    if s.inside is not None:
        inside = np.asarray(s.inside, dtype=np.float64)
        cols.update({f"coverage_{round(100 * p)}": inside[:, i] for i, p in enumerate(s.levels)})
    return cols


def _rank_correlation(loc: np.ndarray, dist: np.ndarray) -> float | None:
    """Spearman's rho, or None where it is undefined (under 3 tiles, or a constant)."""
    if len(loc) < 3 or np.ptp(loc) == 0 or np.ptp(dist) == 0:
        return None
    return spearman(loc, dist)


def method_row(scores: MethodScores) -> dict:
    """A method's row: its figures on its tiles, each with its 95 % bootstrap interval ('<figure>_ci')."""
    s = scores
    figures: dict = {"n": s.n}
    if s.dist_km is not None:
        figures.update(distance_summary(s.dist_km))
    if s.logp is not None:
        figures.update(nll_summary(s.logp))
    if s.inside is not None:
        figures.update(coverage_shares(s.inside, s.levels))
    intervals = column_intervals(_mean_columns(s)) if s.n else {}
    if s.dist_km is not None and s.n:
        intervals.update(column_intervals({"median_km": s.dist_km}, "median"))
    out = {"method": s.method, "key": s.key, **_with_intervals(figures, intervals)}
    if s.localizability is not None and s.dist_km is not None:
        out["spearman_localizability_vs_error"] = _rank_correlation(s.localizability, s.dist_km)
    out.update(s.extra)
    return out


def paired_comparison(a: MethodScores, b: MethodScores) -> dict:
    """GeoScore of a minus b on the same tiles, with its paired bootstrap interval."""
    ga, gb = geoscore(a.dist_km), geoscore(b.dist_km)
    lo, hi = paired_difference_interval(ga, gb)
    return {"a": a.key, "b": b.key, "method_a": a.method, "method_b": b.method, "n": len(ga),
            "geoscore_a": float(ga.mean()), "geoscore_b": float(gb.mean()),
            "geoscore_difference": float(ga.mean() - gb.mean()), "geoscore_difference_ci": [lo, hi]}


def comparisons(methods: list[MethodScores], subset: str) -> list[dict]:
    """The paired comparisons of COMPARISONS whose methods were both scored (retrieval needs --train-data)."""
    by_key = {m.key: m for m in methods}
    return [{"subset": subset, **paired_comparison(by_key[a], by_key[b])}
            for a, b in COMPARISONS if a in by_key and b in by_key and by_key[a].n]


def report_sections(methods: list[MethodScores], land: np.ndarray) -> dict:
    """The rows on all tiles, the land section (its rows on land tiles only, and the water share of the
    split), and the paired comparisons on both."""
    land = np.asarray(land, dtype=bool)
    on_land = [m.subset(land) for m in methods]
    n = len(land)
    return {
        "rows": [method_row(m) for m in methods],
        "land": {"mask": LAND_MASK, "n": int(land.sum()), "water_share": float(1.0 - land.mean()) if n else None,
                 "rows": [method_row(m) for m in on_land] if land.any() else []},
        "comparisons": comparisons(methods, "all") + (comparisons(on_land, "land") if land.any() else []),
    }


def per_tile_errors(methods: list[MethodScores]) -> dict[str, list[float]]:
    """Each method's error per tile (km), keyed by its short name, for the methods that make a guess."""
    return {m.key: np.asarray(m.dist_km, dtype=np.float64).tolist() for m in methods if m.dist_km is not None}


def report_document(model, data: str, settings: dict, evaluation) -> dict:
    """The JSON report: the model, the data and the settings it was scored with, the rows on all tiles and on
    land tiles, the paired comparisons and the per-tile figures."""
    sections = report_sections(evaluation.methods, evaluation.land)
    per_image = {**evaluation.per_image, "land": np.asarray(evaluation.land, dtype=bool).tolist(),
                 "error_km": per_tile_errors(evaluation.methods)}
    return {
        "model": str(model.path), "model_name": model.name, "model_sha256": getattr(model, "weights_sha256", None),
        "data": data, "n": evaluation.n,
        "settings": settings,
        "nll_unit": NLL_UNIT,
        "intervals": INTERVALS,
        **sections,
        "per_image": per_image,
    }


def figure_cell(column: str, value, interval) -> str:
    """A figure as the tables print it (shares in %), its interval in brackets where it has one."""
    if value is None:
        return "-"
    if column.startswith(("acc", "coverage")):
        text = f"{100 * value:.1f} %"
        return text if interval is None else f"{text} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    digits = 2 if column == "nll_mean" else 0
    text = f"{value:.{digits}f}"
    return text if interval is None else f"{text} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (shares in %, NLL in nats per steradian; '-' where a method has no figure),
    each figure followed by its 95 % interval in brackets where the row has one."""
    cols = ["median_km", "mean_km", "acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "geoscore",
            "nll_mean", "coverage_50", "coverage_90", "coverage_99"]
    head = "| method | median km | mean km | @1 | @25 | @200 | @750 | @2500 km | GeoScore | NLL (nats/sr) " \
           "| cov 50 | cov 90 | cov 99 |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        cells = [figure_cell(c, r.get(c), r.get(f"{c}_ci")) for c in cols]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_comparison(c: dict) -> str:
    lo, hi = c["geoscore_difference_ci"]
    return (f"GeoScore, {c['method_a']} minus {c['method_b']} ({c['subset']} tiles, n={c['n']}): "
            f"{c['geoscore_difference']:+.0f} [{lo:+.0f}, {hi:+.0f}] (paired bootstrap)")


def format_report(document: dict) -> str:
    """The report as printed by `geoplonk eval`: the table on all tiles, on land tiles, and the comparisons."""
    level = round(100 * document["intervals"]["level"])
    land = document["land"]
    parts = [f"All tiles (n={document['n']}; brackets: {level} % bootstrap intervals)", format_table(document["rows"])]
    water = "-" if land["water_share"] is None else f"{100 * land['water_share']:.1f} %"
    parts.append(f"\nLand tiles (n={land['n']}; water share of the split {water})")
    parts.append(format_table(land["rows"]) if land["rows"] else "no land tiles")
    if document["comparisons"]:
        parts.append("")
        parts.extend(format_comparison(c) for c in document["comparisons"])
    return "\n".join(parts)
