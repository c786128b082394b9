"""The lat/lon grid the rasters live on: global plate carree cells, north-up rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geodesy import EARTH_RADIUS_KM, latlon_to_xyz


@dataclass(frozen=True)
class Grid:
    """`height` rows from north to south and `width` columns from west to east, cell size `resolution` degrees.

    The global grid starts at (west=-180, north=90).  A cropped grid is a window of it:
    `row0`/`col0` say where it sits in the global grid.
    """

    resolution: float
    height: int
    width: int
    row0: int = 0
    col0: int = 0

    @staticmethod
    def global_grid(resolution: float) -> Grid:
        """The whole globe; the resolution must divide 180 degrees (0.25, 0.5, 1, ...)."""
        height = round(180.0 / resolution)
        if abs(height * resolution - 180.0) > 1e-6:
            raise ValueError(f"a resolution of {resolution} degrees does not divide 180 degrees")
        return Grid(resolution, height, 2 * height)

    @property
    def west(self) -> float:
        return -180.0 + self.col0 * self.resolution

    @property
    def north(self) -> float:
        return 90.0 - self.row0 * self.resolution

    @property
    def east(self) -> float:
        return self.west + self.width * self.resolution

    @property
    def south(self) -> float:
        return self.north - self.height * self.resolution

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.west, self.south, self.east, self.north)

    def lat_centers(self) -> np.ndarray:
        return self.north - (np.arange(self.height) + 0.5) * self.resolution

    def lon_centers(self) -> np.ndarray:
        return self.west + (np.arange(self.width) + 0.5) * self.resolution

    def cell_areas_sr(self) -> np.ndarray:
        """Exact solid angle of each cell of a row (steradians), shape (height,): dlon * (sin north - sin south)."""
        north = np.deg2rad(self.north - np.arange(self.height) * self.resolution)
        south = np.deg2rad(self.north - (np.arange(self.height) + 1) * self.resolution)
        return np.deg2rad(self.resolution) * (np.sin(north) - np.sin(south))

    def cell_areas_km2(self) -> np.ndarray:
        return self.cell_areas_sr() * EARTH_RADIUS_KM**2

    def row_xyz(self, row: int) -> np.ndarray:
        """Unit vectors of the cell centres of one row, (width, 3)."""
        lat = np.full(self.width, self.lat_centers()[row])
        return latlon_to_xyz(lat, self.lon_centers())

    def cell_of(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the cells holding these points, clipped to the grid."""
        row = np.floor((self.north - np.asarray(lat)) / self.resolution).astype(np.int64)
        col = np.floor((np.asarray(lon) - self.west) / self.resolution).astype(np.int64)
        return np.clip(row, 0, self.height - 1), np.clip(col, 0, self.width - 1)

    def window(self, row0: int, row1: int, col0: int, col1: int) -> Grid:
        """Rows [row0, row1) and columns [col0, col1) of this grid."""
        return Grid(self.resolution, row1 - row0, col1 - col0, self.row0 + row0, self.col0 + col0)

    def transform(self):
        """The rasterio Affine of this grid."""
        from affine import Affine

        return Affine(self.resolution, 0.0, self.west, 0.0, -self.resolution, self.north)
