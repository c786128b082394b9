"""What the batch job runs on the workers: read the bytes, decode and embed (CPU), sample and build the
products (model actors).  The products come from the server's own per-photo pipeline
(server.pipeline.run_photo), so a photo and its options give the server's figures and files."""

from __future__ import annotations

import hashlib
import logging
import os
import traceback
from typing import Any

import numpy as np

from geoplonk_service import protocol as P

from .rows import empty_row, result_row, table

log = logging.getLogger("geoplonk.batch")

PENDING = "pending"  # a row still on its way through the pipeline (never written)
SKIPPED = "skipped"  # done by an earlier run (same content, model and options): dropped before writing


def open_input(path: str):
    """(pyarrow filesystem, path in it) for a local path or any URI pyarrow reads (s3://, gs://, hdfs://...)."""
    from pyarrow import fs

    if "://" in path:
        return fs.FileSystem.from_uri(path)
    return fs.LocalFileSystem(), os.path.abspath(path)


def read_bytes(path: str, max_bytes: int = P.MAX_IMAGE_BYTES) -> bytes:
    """The file's bytes, refused over the server's per-image limit (OSError)."""
    filesystem, inner = open_input(path)
    size = filesystem.get_file_info(inner).size
    if size is None:
        raise OSError(f"no such file: {path}")
    if size > max_bytes:
        raise OSError(f"the file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
    with filesystem.open_input_stream(inner) as fh:
        return fh.read()


_DONE: dict[Any, frozenset[str]] = {}


def read_photos(batch: dict[str, np.ndarray], done=None) -> dict[str, np.ndarray]:
    """Path -> bytes and their sha256; a path that cannot be read, whatever the reason (a missing file, a
    malformed URI that pyarrow refuses with ValueError), becomes a failed row rather than failing the task
    and with it the job; a photo whose content an earlier run located with the same model and options is
    marked skipped (`done`: a Ray object ref of the set of their hashes)."""
    if done is not None and done not in _DONE:
        import ray

        _DONE[done] = ray.get(done)
    done_set = _DONE.get(done, frozenset()) if done is not None else frozenset()
    out: dict[str, list] = {"path": [], "sha256": [], "data": [], "status": [], "error_code": [], "error": []}
    for path in batch["path"]:
        path = str(path)
        try:
            data = read_bytes(path)
        except Exception as exc:  # noqa: BLE001 - one path fails alone
            out["path"].append(path)
            out["sha256"].append(None)
            out["data"].append(b"")
            out["status"].append(P.STATUS_FAILED)
            out["error_code"].append("unreadable")
            out["error"].append(f"cannot read the file: {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        skipped = digest in done_set
        out["path"].append(path)
        out["sha256"].append(digest)
        out["data"].append(b"" if skipped else data)
        out["status"].append(SKIPPED if skipped else PENDING)
        out["error_code"].append(None)
        out["error"].append(None)
    return {k: np.array(v, dtype=object) for k, v in out.items()}


def keep_unskipped(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keep = batch["status"] != SKIPPED
    return {k: v[keep] for k, v in batch.items()}


class Embedder:
    """Decodes and embeds photos on a CPU worker; loads the encoder once per actor."""

    def __init__(self, model_spec: str | None, threads: int = 1):
        import torch

        from ..engine.model import load_model
        from ..engine.runtime import configure_cpu_math

        configure_cpu_math()
        # the encoder's convolutions round differently with another thread count (about 6e-6): a server
        # running with as many threads gives the same embeddings, and so the same figures
        torch.set_num_threads(threads)
        self.model = load_model(model_spec, device="cpu")
        self.embed = getattr(self.model, "embed", None) or self.model.encoder.embed  # as server.pipeline does

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..images import ImageError, decode_image

        n = len(batch["path"])
        emb = np.zeros((n, self.model.cond_dim), dtype=np.float32)
        status, code, error = list(batch["status"]), list(batch["error_code"]), list(batch["error"])
        for row in range(n):
            if status[row] != PENDING:
                continue
            try:
                image = decode_image(batch["data"][row], max_bytes=P.MAX_IMAGE_BYTES)
                emb[row] = self.embed([image])[0].float().cpu().numpy()
            except ImageError as exc:
                status[row], code[row], error[row] = P.STATUS_FAILED, P.E_BAD_IMAGE, str(exc)
            except Exception as exc:  # noqa: BLE001 - one photo fails alone
                log.error("photo %s failed:\n%s", batch["path"][row], traceback.format_exc())
                status[row], code[row], error[row] = P.STATUS_FAILED, P.E_INTERNAL, f"{type(exc).__name__}: {exc}"
        return {**batch, "emb": emb, "status": np.array(status, dtype=object),
                "error_code": np.array(code, dtype=object), "error": np.array(error, dtype=object)}


class _Embedded:
    """The model, with the embedding computed upstream standing in for its encoder (for run_photo)."""

    def __init__(self, model, emb):
        self._model, self._emb = model, emb

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def embed(self, images):
        return self._emb


class Locator:
    """A model actor: samples and builds the products of embedded photos through the server's per-photo
    pipeline.  Loads the flow once per actor, on the GPU when the actor has one."""

    def __init__(self, model_spec: str | None, options: dict[str, Any], key: str, files_dir: str | None = None):
        import torch

        from ..engine.model import load_model
        from ..engine.runtime import configure_cpu_math
        from ..engine.sampling import start_points, supported_precision

        configure_cpu_math()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(model_spec, device=self.device)
        self.key = key
        self.options = dict(options)
        self.precision = supported_precision(self.options["precision"], self.model.device)
        self.x0 = start_points(self.options["samples"], self.options["seed"])
        self.files_dir = files_dir

    def __call__(self, batch: dict[str, np.ndarray]):
        rows = []
        for row in range(len(batch["path"])):
            path, digest = str(batch["path"][row]), batch["sha256"][row]
            if batch["status"][row] != PENDING:
                rows.append(empty_row(path, digest, str(batch["status"][row]), batch["error_code"][row],
                                      batch["error"][row]))
                continue
            rows.append(self.locate(path, digest, batch["data"][row], batch["emb"][row]))
        return table(rows)

    def locate(self, path: str, digest: str, data: bytes, emb) -> dict[str, Any]:
        """The photo's row; anything that goes wrong with it (the pipeline, reading its region, writing its
        files) makes it a failed row, so one photo never stops the job."""
        from ..images import ImageError

        try:
            return self._locate(path, digest, data, emb)
        except ImageError as exc:
            return empty_row(path, digest, P.STATUS_FAILED, P.E_BAD_IMAGE, str(exc))
        except Exception as exc:  # noqa: BLE001 - one photo fails alone, never the job
            log.error("photo %s failed:\n%s", path, traceback.format_exc())
            return empty_row(path, digest, P.STATUS_FAILED, P.E_INTERNAL, f"{type(exc).__name__}: {exc}")

    def _locate(self, path: str, digest: str, data: bytes, emb) -> dict[str, Any]:
        import torch

        from ..server.pipeline import run_photo

        events: list[tuple] = []

        def emit(kind: str, *args: Any) -> None:
            if kind == "result":
                events.append(args)

        emb = torch.from_numpy(np.array(emb, dtype=np.float32)).reshape(1, -1)
        run_photo(_Embedded(self.model, emb), self.device, 0, os.path.basename(path), data, self.options,
                   self.precision, self.x0, emit, lambda *_: None)
        (_, status, summary, error, blobs), = events
        if status != P.STATUS_OK:
            return empty_row(path, digest, status, (error or {}).get("code"), (error or {}).get("message"))
        tiff, gpkg = blobs
        row = result_row(path, digest, summary, gpkg, self.key)
        if self.files_dir is not None:
            row["geotiff"] = write_file(self.files_dir, f"{digest}.tif", tiff)
            row["gpkg"] = write_file(self.files_dir, f"{digest}.gpkg", gpkg)
        return row


def write_file(folder: str, name: str, data: bytes) -> str:
    """Write one per-photo file into a local folder (atomically) or any filesystem pyarrow writes."""
    if "://" not in folder:
        from pathlib import Path

        from geoplonk_service.output_files import atomic_write

        return str(atomic_write(Path(folder) / name, data))
    filesystem, inner = open_input(folder)
    with filesystem.open_output_stream(f"{inner.rstrip('/')}/{name}") as fh:
        fh.write(data)
    return f"{folder.rstrip('/')}/{name}"

