"""Geotagged photo collections for training and evaluation, with cached embeddings.

A dataset is a folder of photos carrying EXIF GPS, or a CSV with columns path, latitude,
longitude (paths relative to the CSV). Embeddings are computed once per (file path, size,
mtime, encoder) and kept in an npz cache, so re-runs of train/eval skip the encoder.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..user_cache import cache_dir

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif", ".bmp"}
LAT_KEYS = ("latitude", "lat")
LON_KEYS = ("longitude", "lon", "lng")


@dataclass
class GeoDataset:
    """Photo files and their true positions (degrees)."""

    paths: list[Path]
    latlon: np.ndarray  # (N, 2) float64 degrees
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: np.ndarray | list[int]) -> GeoDataset:
        index = np.asarray(index, dtype=np.int64)
        return GeoDataset([self.paths[i] for i in index], self.latlon[index], self.source)


def _pick(row: dict, keys: tuple[str, ...], what: str, where: str) -> str:
    lowered = {k.strip().lower(): v for k, v in row.items() if k is not None}
    for key in keys:
        if key in lowered and lowered[key] not in (None, ""):
            return lowered[key]
    raise ValueError(f"{where}: no {what} column (expected one of {', '.join(keys)})")


def read_csv(csv_path: str | os.PathLike) -> GeoDataset:
    """CSV with a header: path, latitude, longitude (degrees); relative paths are relative to the CSV."""
    csv_path = Path(csv_path)
    base = csv_path.parent
    paths, coords = [], []
    with open(csv_path, newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh), start=2):
            where = f"{csv_path}:{i}"
            path = Path(_pick(row, ("path", "file", "filename", "image"), "path", where))
            lat = float(_pick(row, LAT_KEYS, "latitude", where))
            lon = float(_pick(row, LON_KEYS, "longitude", where))
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"{where}: position {lat}, {lon} is out of range")
            paths.append(path if path.is_absolute() else base / path)
            coords.append((lat, lon))
    if not paths:
        raise ValueError(f"{csv_path} lists no photos")
    return GeoDataset(paths, np.asarray(coords, dtype=np.float64).reshape(-1, 2), str(csv_path))


def read_folder(folder: str | os.PathLike, progress: bool = True) -> GeoDataset:
    """Every image under folder (recursive, sorted) that carries EXIF GPS; the others are counted and skipped."""
    from PIL import Image
    from tqdm import tqdm

    from model_server.images import read_exif_gps

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    paths, coords, skipped = [], [], 0
    for path in tqdm(files, desc="reading GPS", disable=not progress, mininterval=2, file=sys.stderr):
        try:
            with Image.open(path) as im:
                gps = read_exif_gps(im)
        except Exception:  # noqa: BLE001 - an unreadable file is skipped like one without GPS
            gps = None
        if gps is None:
            skipped += 1
            continue
        paths.append(path)
        coords.append((gps.lat, gps.lon))
    if skipped:
        print(f"{skipped} of {len(files)} images in {folder} have no readable EXIF GPS; skipped", file=sys.stderr)
    if not paths:
        raise ValueError(f"no geotagged photos (EXIF GPS) found under {folder}")
    return GeoDataset(paths, np.asarray(coords, dtype=np.float64).reshape(-1, 2), str(folder))


def read_datasets(paths: str | os.PathLike | Sequence[str | os.PathLike], progress: bool = True) -> GeoDataset:
    """Several CSV files or folders as one dataset, in the order given (`--data A --data B`).

    The joined dataset takes the first source's name, so its default embedding cache is the first source's
    (entries are keyed by file, so a shared cache only grows).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    parts = [read_dataset(path, progress) for path in paths]
    if len(parts) == 1:
        return parts[0]
    return GeoDataset([p for part in parts for p in part.paths], np.concatenate([part.latlon for part in parts]),
                      parts[0].source)


def read_dataset(path: str | os.PathLike, progress: bool = True) -> GeoDataset:
    """A CSV file or a folder of geotagged photos."""
    path = Path(path)
    if path.is_dir():
        return read_folder(path, progress)
    if path.is_file():
        return read_csv(path)
    raise FileNotFoundError(f"dataset {path} does not exist (give a folder of geotagged photos or a CSV)")


# ---------------------------------------------------------------- embedding cache


def file_key(path: Path, encoder_name: str) -> str:
    """Cache key: absolute path, size, mtime (ns) and encoder, so a changed file is re-encoded."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{encoder_name}"


def default_cache_path(source: str, encoder_name: str) -> Path:
    root = cache_dir() / "embeddings"
    tag = hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:12]
    return root / f"{Path(source).stem}-{tag}-{encoder_name}.npz"


def load_cache(cache_path: Path) -> dict[str, np.ndarray]:
    if not cache_path.is_file():
        return {}
    with np.load(cache_path, allow_pickle=False) as data:
        return dict(zip(data["keys"].tolist(), data["embeddings"], strict=True))


def save_cache(cache_path: Path, cache: dict[str, np.ndarray]) -> None:
    """Written atomically under a unique temporary name: two runs sharing a cache never see half a file."""
    import io

    from geoplonk_service.output_files import atomic_write

    cache_path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(cache)
    buffer = io.BytesIO()
    np.savez(buffer, keys=np.asarray(keys), embeddings=np.stack([cache[k] for k in keys]).astype(np.float32))
    atomic_write(cache_path, buffer.getvalue())


def embed_dataset(
    dataset: GeoDataset,
    encoder,
    *,
    cache_path: str | os.PathLike | None = None,
    batch_size: int = 64,
    save_every: int = 2048,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, GeoDataset]:
    """(N', D) float32 embeddings and the dataset restricted to the N' photos that decoded.

    Uses and extends the npz cache; photos that fail to decode are reported and dropped.
    """
    from tqdm import tqdm

    from model_server.images import ImageError, decode_image

    cache_path = Path(cache_path) if cache_path else default_cache_path(dataset.source, encoder.name)
    cache = load_cache(cache_path)
    keys = [file_key(p, encoder.name) for p in dataset.paths]
    todo = [i for i, k in enumerate(keys) if k not in cache]
    bad: set[int] = set()
    if todo:
        bar = tqdm(total=len(todo), desc=f"embedding ({encoder.name})", disable=not progress, mininterval=2,
                   file=sys.stderr)
        since_save = 0
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            images, ok = [], []
            for i in chunk:
                try:
                    images.append(decode_image(dataset.paths[i].read_bytes()))
                    ok.append(i)
                except (ImageError, OSError) as exc:
                    print(f"skipped {dataset.paths[i]}: {exc}", file=sys.stderr)
                    bad.add(i)
            if images:
                emb = encoder.embed(images).numpy().astype(np.float32)
                for i, e in zip(ok, emb, strict=True):
                    cache[keys[i]] = e
            bar.update(len(chunk))
            since_save += len(chunk)
            if on_batch is not None:
                on_batch(min(start + batch_size, len(todo)), len(todo))
            if since_save >= save_every:
                save_cache(cache_path, cache)
                since_save = 0
        bar.close()
        save_cache(cache_path, cache)
    keep = [i for i in range(len(dataset)) if i not in bad]
    emb = np.stack([cache[keys[i]] for i in keep]) if keep else np.zeros((0, encoder.dim), np.float32)
    return torch.from_numpy(emb), dataset.subset(keep)


def embed_rows(
    path: str | os.PathLike, rows: slice, encoder, cache_path: str | os.PathLike
) -> tuple[torch.Tensor, GeoDataset]:
    """embed_dataset on the rows `rows` of a dataset file or folder, quietly: the research scripts' tiles."""
    photos = read_dataset(path, progress=False)
    photos = photos.subset(np.arange(len(photos))[rows])
    return embed_dataset(photos, encoder, cache_path=cache_path, progress=False)


def targets_xyz(latlon_deg: np.ndarray) -> torch.Tensor:
    """(N, 2) degrees -> (N, 3) float32 unit vectors (the engine's convention)."""
    from .sphere import degrees_to_xyz

    return degrees_to_xyz(torch.as_tensor(latlon_deg, dtype=torch.float64)).float()
