"""GeoPackage bytes with the contract's layers, written with pyogrio (temp file, then read back)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import shapely
from pyogrio import set_gdal_config_options
from pyogrio.raw import write as ogr_write
from shapely.geometry import MultiPolygon, Point

CRS = "EPSG:4326"
# GDAL stamps gpkg_contents.last_change with the clock, so two identical results gave different bytes.
# A fixed stamp (GDAL's documented OGR_CURRENT_DATE) makes the same photo and options give the same file.
FIXED_TIMESTAMP = "2000-01-01T00:00:00.000Z"
# The file is a scratch copy read back at once, so SQLite's fsyncs and rollback journal buy nothing; on a busy
# disk they were most of a photo's write time. The result reaches disk atomically later (output_files.atomic_write).
SCRATCH_SQLITE = {"OGR_SQLITE_SYNCHRONOUS": "OFF", "OGR_SQLITE_JOURNAL": "OFF"}


@dataclass
class Layer:
    """One layer: geometries plus columns (name -> list of values, same length)."""

    name: str
    geometry_type: str
    geometries: list = field(default_factory=list)
    columns: dict[str, list] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)  # for empty layers: column -> numpy dtype


def _write_layer(path: str, layer: Layer, append: bool) -> None:
    n = len(layer.geometries)
    fields = {}
    for name, values in layer.columns.items():
        dtype = layer.dtypes.get(name)
        fields[name] = np.asarray(values, dtype=dtype if dtype else (object if n == 0 else None))
        if fields[name].dtype.kind in "UO":
            fields[name] = np.asarray(values, dtype=object) if n else np.asarray([], dtype=object)
    geometry = shapely.to_wkb(np.asarray(layer.geometries, dtype=object)) if n else np.asarray([], dtype=object)
    ogr_write(
        path,
        geometry,
        field_data=list(fields.values()),
        fields=list(fields.keys()),
        layer=layer.name,
        driver="GPKG",
        geometry_type=layer.geometry_type,
        crs=CRS,
        append=append,
        # GeoPackage 1.2: QGIS 3.22's GDAL 3.6 warns that 1.4 files "may only be partially supported".
        dataset_options=None if append else {"VERSION": "1.2"},
    )


def geopackage_bytes(layers: list[Layer]) -> bytes:
    """All layers in one GeoPackage, returned as bytes."""
    set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_TIMESTAMP, **SCRATCH_SQLITE})
    with tempfile.TemporaryDirectory(prefix="geoplonk-gpkg-") as tmp:
        path = os.path.join(tmp, "result.gpkg")
        for i, layer in enumerate(layers):
            _write_layer(path, layer, append=i > 0)
        with open(path, "rb") as fh:
            return fh.read()


def points_layer(name: str, lats, lons, columns: dict[str, list] | None = None, dtypes=None) -> Layer:
    geoms = [Point(float(lon), float(lat)) for lat, lon in zip(lats, lons, strict=True)]
    return Layer(name, "Point", geoms, dict(columns or {}), dict(dtypes or {}))


def regions_layer(name: str, geometries: list[MultiPolygon], columns: dict[str, list]) -> Layer:
    return Layer(name, "MultiPolygon", list(geometries), columns)
