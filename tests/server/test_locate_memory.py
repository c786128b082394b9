"""The client side of an archive, against a stub server that speaks the real protocol and answers at once (no
model): memory over 10,000 photos, and when `geoplonk locate` may reuse the outputs of an earlier run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geoplonk_service.client import GeoPlonkClient, PhotoResult

from .conftest import REPO, server_env

sys.path.insert(0, str(REPO / "benchmarks"))

from bench_scale import StubServer, growth_after, vm_rss  # noqa: E402

BLOB = 200_000  # bytes of GeoTIFF + GeoPackage a photo, about a real result's at the default options
BOUND = 16 * 2**20  # growth allowed after warm-up


def photos(n: int, prefix: str = "p"):
    """n photos as (name, bytes), made one at a time."""
    for i in range(n):
        yield f"{prefix}{i:05d}.jpg", i.to_bytes(8, "little") * 64


def test_geolocate_each_memory_stays_flat_over_10000_photos():
    with StubServer(BLOB) as stub, GeoPlonkClient(stub.endpoint, timeout_s=30) as client:
        client.info()
        samples: list[tuple[int, int]] = []
        seen = 0

        def written(result: PhotoResult) -> None:  # as locate: use the result, keep nothing
            nonlocal seen
            assert result.ok and len(result.geotiff) + len(result.gpkg) == BLOB
            seen += 1
            if seen % 100 == 0:
                samples.append((seen, vm_rss()))

        assert client.geolocate_each(photos(10_000), {"samples": 16}, on_result=written) == 10_000
        at_warm_up, growth = growth_after(samples, 1_000)

    kept_bytes = 9_000 * BLOB  # what keeping every result after the warm-up would hold (geolocate's list)
    print(f"\ngeolocate_each, 10,000 photos x {BLOB / 1000:.0f} kB: RSS {at_warm_up / 2**20:.1f} MiB after 1,000, "
          f"growth after that {growth / 2**20:+.1f} MiB; keeping the results would hold {kept_bytes / 2**20:,.0f} MiB")
    assert growth < BOUND < kept_bytes


def locate(out: Path, *args: str, endpoint: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_server.cli", "locate", *args, "--out", str(out),
                           "--endpoint", endpoint], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, **server_env()})


def test_rerun_reuses_outputs_only_of_the_same_photo_and_request(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.jpg").write_bytes(b"first photo")
    (a / "y.jpg").write_bytes(b"second photo")
    (b / "x.jpg").write_bytes(b"another photo named x")
    out = tmp_path / "out"
    with StubServer(1000, keep_names=True) as stub:
        def run(*args: str) -> list[str]:
            sent = len(stub.names)
            done = locate(out, *args, endpoint=stub.endpoint)
            assert done.returncode == 0, done.stderr
            return stub.names[sent:]

        assert run(str(a / "x.jpg"), str(a / "y.jpg")) == ["x.jpg", "y.jpg"]
        assert run(str(a / "x.jpg"), str(a / "y.jpg")) == []
        # another photo handed x's stem: its outputs are not x's
        assert run(str(b / "x.jpg")) == ["x.jpg"]
        assert json.loads((out / "x.json").read_text())["source"]["path"] == str((b / "x.jpg").resolve())
        assert run(str(b / "x.jpg")) == []
        # a photo changed in place (same size and name, new content and time) is located again
        (b / "x.jpg").write_bytes(b"another photo named X")
        os.utime(b / "x.jpg", ns=(1, 1))
        assert run(str(b / "x.jpg")) == ["x.jpg"]
        # options left to the server are part of the request: an explicit cfg or model is another request
        assert run(str(a / "y.jpg")) == []
        assert run(str(a / "y.jpg"), "--cfg", "1") == ["y.jpg"]
        assert run(str(a / "y.jpg"), "--cfg", "1") == []
        assert run(str(a / "y.jpg")) == ["y.jpg"]
        assert run(str(a / "y.jpg"), "--model", "other") == ["y.jpg"]
        assert json.loads((out / "y.json").read_text())["request"]["model"] == "other"
        assert run(str(a / "y.jpg"), "--force", "--model", "other") == ["y.jpg"]


def test_an_interrupted_save_never_looks_complete(tmp_path, monkeypatch):
    import geoplonk_service.client as client_module
    from model_server.commands.locate import complete_result, photo_identity, requested_options

    photo = tmp_path / "x.jpg"
    photo.write_bytes(b"a photo")
    request = requested_options({})
    extra = {"source": photo_identity(photo), "request": request}
    result = PhotoResult(0, "x.jpg", "ok", summary={"model": "m"}, geotiff=b"tif", gpkg=b"gpkg")
    result.save(tmp_path / "out", "x", extra=extra)
    assert complete_result(tmp_path / "out", "x", photo, request) is not None
    assert complete_result(tmp_path / "out", "x", photo, requested_options({"cfg": 1.0})) is None

    real = client_module.atomic_write

    def cut_short(path: Path, data: bytes, mode: int | None = None) -> Path:
        if path.suffix == ".gpkg":
            raise KeyboardInterrupt
        return real(path, data, mode)

    monkeypatch.setattr(client_module, "atomic_write", cut_short)
    with pytest.raises(KeyboardInterrupt):
        result.save(tmp_path / "out", "x", extra=extra)
    assert not (tmp_path / "out" / "x.json").exists()  # the new .tif beside the old .gpkg is not complete
    assert complete_result(tmp_path / "out", "x", photo, request) is None
