"""Land or sea at a point: global-land-mask's 30-arc-second GLOBE mask, answered from one bit per cell.

global-land-mask loads its mask as a (21600, 43200) bool array on import: 933 MB held by every process that names a
place, and 4 s of decompression at each start. Here the same mask is packed to bits once per user (the cache folder,
user_cache.py), streamed from the package's file a band of rows at a time (never whole in memory), and kept as a
.npy file (117 MB) that later processes memory-map: a lookup touches a few pages, a start costs nothing. Answers
are the package's own, bit for bit (the same cells, by its own index arithmetic).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from ..user_cache import cache_dir

ROWS_PER_BAND = 1024  # rows unpacked at a time while building: 44 MB of bools


FORMAT = "v1"  # in the cache's name: a change to the packing must not read an older cache
STALE_BUILD_S = 3600  # a build's temporary file older than this was left by a killed process


def source_file() -> Path:
    """The package's compressed mask (mask, lat, lon), found without importing the package (that loads it)."""
    import importlib.util

    spec = importlib.util.find_spec("global_land_mask")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the global-land-mask package is not installed (pip install global-land-mask)")
    return Path(next(iter(spec.submodule_search_locations))) / "globe_combined_mask_compressed.npz"


def is_land(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """True where the cell holding (lat, lon) is land (most lakes count as land), as global_land_mask.is_land
    answers; lat and lon in degrees, clamped to the mask's axes (the package refuses beyond +-90 and +-180)."""
    mask = _packed_mask()
    rows = _index(np.asarray(lat, dtype=np.float64), mask.lat0, mask.lat_step, mask.lat_lo, mask.lat_hi)
    cols = _index(np.asarray(lon, dtype=np.float64), mask.lon0, mask.lon_step, mask.lon_lo, mask.lon_hi)
    ocean = (mask.bits[rows, cols >> 3] >> (7 - (cols & 7))) & 1
    return ocean == 0


def _index(values: np.ndarray, first: float, step: float, lo: float, hi: float) -> np.ndarray:
    """The package's lat_to_index / lon_to_index: clamp to the axis, then truncate."""
    return ((np.clip(values, lo, hi) - first) / step).astype(int)


class _PackedMask:
    def __init__(self, bits: np.ndarray, lat: np.ndarray, lon: np.ndarray):
        self.bits = bits  # (21600, 5400) uint8: the ocean bits of each row, big-endian within a byte
        self.lat0, self.lat_step = float(lat[0]), float(lat[1] - lat[0])
        self.lat_lo, self.lat_hi = float(lat.min()), float(lat.max())
        self.lon0, self.lon_step = float(lon[0]), float(lon[1] - lon[0])
        self.lon_lo, self.lon_hi = float(lon.min()), float(lon.max())


@functools.lru_cache(maxsize=1)
def _packed_mask() -> _PackedMask:
    source = source_file()
    with np.load(source) as npz:
        lat, lon = npz["lat"], npz["lon"]
    tag = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    shape = (len(lat), -(-len(lon) // 8))
    cached = cache_dir() / f"land-mask-{FORMAT}-{tag}.npy"
    try:
        bits = np.load(cached, mmap_mode="r")
        if bits.shape == shape and bits.dtype == np.uint8:
            return _PackedMask(bits, lat, lon)
    except (OSError, ValueError):
        pass  # none yet, or a damaged one: built again
    bits = _pack(source, shape)
    try:
        _save(bits, cached)
        bits = np.load(cached, mmap_mode="r")  # mapped, not held
    except OSError:
        pass  # a read-only cache folder: this process keeps the bits in memory
    return _PackedMask(bits, lat, lon)


def _save(bits: np.ndarray, path: Path) -> None:
    """Atomic and on disk before it is named: another process never maps a half-written or zeroed file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(".land-mask-*.npy"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_BUILD_S:
                stale.unlink()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".land-mask-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, bits)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pack(source: Path, shape: tuple[int, int]) -> np.ndarray:
    """The package's mask.npy, read from its zip a band of rows at a time and packed to bits."""
    bits = np.empty(shape, dtype=np.uint8)
    with zipfile.ZipFile(source) as archive, archive.open("mask.npy") as stream:
        version = np.lib.format.read_magic(stream)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise RuntimeError(f"unexpected .npy version {version} of the land mask in {source}")
        mask_shape, fortran, dtype = readers[version](stream)
        if dtype != np.bool_ or fortran or mask_shape[0] != shape[0] or -(-mask_shape[1] // 8) != shape[1]:
            raise RuntimeError(f"unexpected land mask layout in {source}: {mask_shape}, {dtype}, fortran={fortran}")
        width = mask_shape[1]
        for start in range(0, shape[0], ROWS_PER_BAND):
            rows = min(ROWS_PER_BAND, shape[0] - start)
            data = stream.read(rows * width)
            if len(data) != rows * width:
                raise RuntimeError(f"the land mask in {source} ends early")
            band = np.frombuffer(data, dtype=np.uint8).reshape(rows, width)
            bits[start : start + rows] = np.packbits(band, axis=1)
    return bits
