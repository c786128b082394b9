"""The evaluation report: one row of figures per method, the report document and its Markdown table."""

from __future__ import annotations

import numpy as np

from .metrics import distance_summary, nll_summary

NLL_UNIT = "nats per steradian (uniform on the sphere = log 4 pi = 2.531)"


def row(name: str, dist_km: np.ndarray, logp: np.ndarray | None) -> dict:
    """A method's distance figures, and its NLL of the truths when it has a density (log p per steradian)."""
    out = {"method": name, **distance_summary(dist_km)}
    if logp is not None:
        out.update(nll_summary(logp))
    return out


def report_document(model, data: str, n: int, settings: dict, rows: list[dict], per_image: dict) -> dict:
    """The JSON report: the model, the data and the settings it was scored with, the rows and per-photo figures."""
    return {
        "model": str(model.path), "model_name": model.name, "data": data, "n": n,
        "settings": settings,
        "nll_unit": NLL_UNIT,
        "rows": rows, "per_image": per_image,
    }


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (shares in %, NLL in nats per steradian; '-' where a method has no figure)."""
    cols = ["median_km", "mean_km", "acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "geoscore",
            "nll_mean", "coverage_50", "coverage_90", "coverage_99"]
    head = "| method | median km | mean km | @1 | @25 | @200 | @750 | @2500 km | GeoScore | NLL (nats/sr) " \
           "| cov 50 | cov 90 | cov 99 |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if v is None:
                cells.append("-")
            elif c.startswith(("acc", "coverage")):
                cells.append(f"{100 * v:.1f} %")
            elif c == "nll_mean":
                cells.append(f"{v:.2f}")
            else:
                cells.append(f"{v:.0f}")
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
