"""The batch job as a Ray Data pipeline: paths -> bytes -> decode + embed (CPU workers) -> sample + products
(model actors) -> a GeoParquet dataset.

Stages and their resources:
- read: tasks of `batch_size` paths (file bytes, sha256, the skip of photos already done);
- embed: `batch_size` photos a call, on `embed_workers` CPU actors that load the encoder once each;
- locate: `batch_size` photos a call, on `actors` model actors (num_gpus=1 each when the cluster has GPUs,
  one CPU each otherwise) that load the model once each;
- write: Parquet part files carrying the GeoParquet 'geo' metadata.
Ray retries a task or restarts an actor lost with its node; the part files are named per write task, so a
retried write replaces its own file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from geoplonk_service import protocol as P
from geoplonk_service.photos import PHOTO_EXTENSIONS

from . import LOCATE_BATCH
from .rows import SCHEMA, job_key
from .stages import Embedder, Locator, keep_unskipped, open_input, read_photos


@dataclass
class JobResult:
    out: str
    photos: int = 0  # rows this run wrote
    counts: dict[str, int] = field(default_factory=dict)
    skipped: int | None = 0  # photos an earlier run had done (None: not counted, for a manifest)
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    @property
    def photos_per_s(self) -> float:
        return self.photos / self.seconds if self.seconds > 0 else 0.0


def is_manifest(source: str) -> bool:
    return source.lower().endswith((".parquet", ".csv"))


def folder_paths(folder: str) -> list[str]:
    """The photo files under `folder` (every depth), sorted; hidden files and folders skipped."""
    from pyarrow import fs

    filesystem, inner = open_input(folder)
    infos = filesystem.get_file_info(fs.FileSelector(inner, recursive=True))
    prefix = folder.split("://", 1)[0] + "://" if "://" in folder else ""
    found = []
    for info in infos:
        relative = os.path.relpath(info.path, inner)
        if info.type == fs.FileType.File and info.path.lower().endswith(PHOTO_EXTENSIONS) and not any(
                part.startswith(".") for part in relative.split(os.sep)):
            found.append(prefix + info.path if prefix else info.path)
    return sorted(found)


def manifest_dataset(source: str, column: str):
    """A Parquet or CSV manifest's `column` of paths as a Ray dataset with one column, `path`; a relative local
    path is taken from the manifest's own folder."""
    import ray.data

    base = os.path.dirname(os.path.abspath(source)) if "://" not in source else None
    if source.lower().endswith(".parquet"):
        ds = ray.data.read_parquet(source, columns=[column])
    else:
        ds = ray.data.read_csv(source, include_paths=False)

    def paths(batch: dict) -> dict:
        import numpy as np

        values = [str(p) for p in batch[column]]
        if base is not None:
            values = [p if "://" in p or os.path.isabs(p) else os.path.join(base, p) for p in values]
        return {"path": np.array(values, dtype=object)}

    return ds.map_batches(paths, batch_format="numpy", batch_size=4096)


def existing_files(out: str) -> list[str]:
    from pyarrow import fs

    filesystem, inner = open_input(out)
    if filesystem.get_file_info(inner).type != fs.FileType.Directory:
        return []
    infos = filesystem.get_file_info(fs.FileSelector(inner, recursive=False))
    return sorted(i.path for i in infos if i.path.endswith(".parquet") and not os.path.basename(i.path).startswith("."))


def read_columns(out: str, path: str, columns: list[str]):
    """A part file's columns, or None when it cannot be read (a write cut short by a killed job)."""
    import pyarrow.parquet as pq

    filesystem, _ = open_input(out)
    try:
        return pq.read_table(path, columns=columns, filesystem=filesystem)
    except Exception:  # noqa: BLE001 - such a file holds nothing that counts as done
        return None


def done_hashes(out: str, key: str) -> frozenset[str]:
    """Content hashes of the photos an earlier run located with this model and these options."""
    done: set[str] = set()
    for path in existing_files(out):
        t = read_columns(out, path, ["sha256", "status", "job_key"])
        if t is None:
            continue
        for digest, status, k in zip(*(t.column(c).to_pylist() for c in ("sha256", "status", "job_key")),
                                     strict=True):
            if status == P.STATUS_OK and k == key and digest:
                done.add(digest)
    return frozenset(done)


def model_identity(model) -> dict[str, Any]:
    """The model as the job key names it: its name and the sha256 of its manifest and of its weights."""
    import hashlib

    from ..engine.checkpoint import WEIGHTS_FILE

    digest = hashlib.sha256()
    with open(os.path.join(model.path, WEIGHTS_FILE), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    manifest = json.dumps(model.manifest, sort_keys=True, separators=(",", ":")).encode()
    return {"name": model.name, "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "weights_sha256": digest.hexdigest()}


def prune_superseded(out: str, before: list[str], new: list[str]) -> None:
    """Drop every row of earlier runs for a path this run wrote again (a failed photo tried again, a photo
    whose content changed, everything with --force): one row per path."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rewritten: set[str] = set()
    for path in new:
        t = read_columns(out, path, ["path"])
        if t is not None:
            rewritten.update(t.column("path").to_pylist())
    if not rewritten:
        return
    filesystem, _ = open_input(out)
    for path in before:
        t = read_columns(out, path, list(SCHEMA.names))
        if t is None:
            continue
        stale = pc.fill_null(pc.is_in(t.column("path"), value_set=pa.array(sorted(rewritten))), False)
        if not pc.any(stale).as_py():
            continue
        kept = t.filter(pc.invert(stale)).replace_schema_metadata(SCHEMA.metadata)
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp"
        pq.write_table(kept, tmp, filesystem=filesystem)
        filesystem.move(tmp, path)


def count(out: str, files: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in files:
        t = read_columns(out, path, ["status"])
        for status in t.column("status").to_pylist() if t is not None else []:
            counts[status] = counts.get(status, 0) + 1
    return counts


def run_job(
    source: str,
    out: str,
    model: str | None = None,
    options: dict[str, Any] | None = None,
    *,
    actors: int | None = None,
    embed_workers: int = 1,
    embed_threads: int = 1,
    batch_size: int = LOCATE_BATCH,
    path_column: str = "path",
    write_files: bool = False,
    force: bool = False,
    address: str | None = None,
) -> JobResult:
    """Geolocate every photo of `source` (a folder tree, or a Parquet/CSV manifest of paths) into the
    GeoParquet dataset `out`, on the Ray cluster at `address` ("auto": the one this machine belongs to; None:
    the one this process is connected to, else a new local one)."""
    import ray
    import ray.data

    from ..engine.model import load_model

    out = out if "://" in out else os.path.abspath(out)  # the workers do not share the driver's cwd
    options = P.validate_options({k: v for k, v in (options or {}).items() if k != "model"})
    options["model"] = model  # as a client would request it: the summary's options say so
    identity = model_identity(load_model(model, device="cpu"))  # the flow only, on the driver, for the key
    key = job_key(identity, {k: v for k, v in options.items() if k != "model"})
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a job's details never leave the cluster
        # "local" unless told: a stale /tmp/ray/ray_current_cluster must not send the job to a dead cluster
        ray.init(address=address or "local", log_to_driver=True, include_dashboard=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = actors or max(1, gpus)
    before = existing_files(out)
    done = frozenset() if force else done_hashes(out, key)
    files_dir = None
    if write_files:
        files_dir = out.rstrip("/") + "/files"
        if "://" not in files_dir:
            os.makedirs(files_dir, exist_ok=True)

    started = time.perf_counter()
    if is_manifest(source):
        ds, listed = manifest_dataset(source, path_column), None
    else:
        paths = folder_paths(source)
        ds, listed = ray.data.from_items([{"path": p} for p in paths]), len(paths)
    done_ref = ray.put(done) if done else None
    # A block goes to one actor whole, so every stage keeps blocks of one locate call: larger ones left the
    # second model actor idle on a job of under a block's photos.
    ds = ds.map_batches(read_photos, batch_format="numpy", batch_size=batch_size, fn_kwargs={"done": done_ref})
    ds = ds.map_batches(keep_unskipped, batch_format="numpy", batch_size=None)
    ds = ds.map_batches(Embedder, batch_format="numpy", batch_size=batch_size, concurrency=embed_workers,
                        num_cpus=embed_threads, fn_constructor_kwargs={"model_spec": model, "threads": embed_threads})
    ds = ds.map_batches(Locator, batch_format="numpy", batch_size=batch_size, concurrency=actors,
                        num_gpus=1 if gpus else 0, num_cpus=1,
                        fn_constructor_kwargs={"model_spec": model, "options": options, "key": key,
                                               "files_dir": files_dir})
    ds.write_parquet(out, schema=SCHEMA)
    seconds = time.perf_counter() - started
    new = [f for f in existing_files(out) if f not in set(before)]
    prune_superseded(out, before, new)
    counts = count(out, new)
    photos = sum(counts.values())
    return JobResult(out, photos, counts, max(0, listed - photos) if listed is not None else None, seconds, new)


def describe(result: JobResult) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in sorted(result.counts.items())) or "nothing new"
    skipped = f", {result.skipped} already done" if result.skipped else ""
    return (f"{result.photos} photos written ({counts}{skipped}) in {result.seconds:.1f} s, "
            f"{result.photos_per_s:.2f} photos/s; dataset: {result.out}")


def load_rows(out: str) -> list[dict[str, Any]]:
    """Every row of the dataset (for tests and small archives)."""
    rows: list[dict[str, Any]] = []
    for path in existing_files(out):
        t = read_columns(out, path, list(SCHEMA.names))
        if t is not None:
            rows += t.to_pylist()
    return rows


def geo_metadata(path: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[b"geo"])
