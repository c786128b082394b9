"""GeoTIFF bytes for a probability raster (rasterio MemoryFile: nothing touches the disk)."""

from __future__ import annotations

import os
import re

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.io import MemoryFile

from .grid import Grid

NODATA = -1.0  # probabilities are >= 0, so -1 can never be a real value
OVERVIEW_FACTORS = (2, 4, 8, 16)
TILE = 256
MIN_OVERVIEW_PIXELS = 8  # an overview is built while its longer side keeps at least this many pixels


# Before GDAL 3.7.3 the threaded GTiff writer could corrupt tiles that it read back while writing them, as building
# overviews does (OSGeo/gdal#8470).
THREADED_WRITER_SAFE = tuple(int(part) for part in re.findall(r"\d+", rasterio.__gdal_version__)[:3]) >= (3, 7, 3)


def compression_threads() -> str:
    """GDAL's threads for compressing tiles: the process's OpenMP budget where one is set (a Ray actor's cores),
    else every core; one where the threaded writer is not safe."""
    if not THREADED_WRITER_SAFE:
        return "1"
    budget = os.environ.get("OMP_NUM_THREADS", "")
    return budget if budget.isdigit() and int(budget) > 0 else "ALL_CPUS"


def geotiff_bytes(prob: np.ndarray, grid: Grid, tags: dict[str, object] | None = None) -> bytes:
    """float32 band 1 = probability per cell, EPSG:4326, nodata -1, deflate, tiled, with overviews and tags."""
    data = np.asarray(prob, dtype=np.float32)
    if data.shape != (grid.height, grid.width):
        raise ValueError(f"raster shape {data.shape} does not match the grid {(grid.height, grid.width)}")
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "height": grid.height,
        "width": grid.width,
        "crs": "EPSG:4326",
        "transform": grid.transform(),
        "nodata": NODATA,
        "compress": "deflate",
        "predictor": 3,
        "num_threads": compression_threads(),  # tiles compress independently: the same bytes, sooner
    }
    # Always tiled (as the contract says), cropped and coarse rasters too: 256 x 256 tiles, or one tile (a
    # multiple of 16, as TIFF requires) when the whole raster is smaller.
    block = min(TILE, -(-max(grid.height, grid.width) // 16) * 16)
    profile.update(tiled=True, blockxsize=block, blockysize=block)
    factors = [f for f in OVERVIEW_FACTORS if max(grid.height, grid.width) // f >= MIN_OVERVIEW_PIXELS]
    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            dst.write(data, 1)
            dst.update_tags(**{k: str(v) for k, v in (tags or {}).items()})
            dst.update_tags(1, units="probability per cell")
            dst.set_band_description(1, "probability")
            if factors:
                dst.build_overviews(factors, Resampling.average)
                dst.update_tags(ns="rio_overview", resampling="average")
        return memfile.read()
