"""Client behaviour that needs no server: batching, local size checks, atomic saves, silence."""

from __future__ import annotations

import json
import socket
import time

import pytest

from geoplonk_service import protocol as P
from geoplonk_service.client import GeoPlonkClient, PhotoResult, ServerUnavailable, plan_batches


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_plan_batches_respects_count_and_bytes():
    assert plan_batches([1] * 5, max_images=2, max_bytes=P.MAX_HEADER_BYTES + 100) == [[0, 1], [2, 3], [4]]
    assert plan_batches([60, 60, 30], max_images=10, max_bytes=P.MAX_HEADER_BYTES + 100) == [[0], [1, 2]]
    assert plan_batches([]) == []


def test_oversized_photo_fails_locally_without_a_server():
    with GeoPlonkClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.5, retries=0) as client:
        client.limits["max_image_bytes"] = 10
        seen = []
        results = client.geolocate([("big.jpg", b"x" * 11)], on_result=seen.append)
    assert [r.status for r in results] == ["failed"] and seen == results
    assert results[0].error["code"] == P.E_TOO_LARGE


def test_silence_raises_server_unavailable_after_retries():
    with GeoPlonkClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.3, retries=2) as client:
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailable):
            client.info()
        assert 0.8 < time.monotonic() - t0 < 5  # three attempts of 0.3 s
        with pytest.raises(ServerUnavailable):
            client.geolocate([("a.jpg", b"data")])


def test_cancel_before_sending_reports_cancelled():
    with GeoPlonkClient(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.3) as client:
        results = client.geolocate([("a.jpg", b"1"), ("b.jpg", b"2")], is_cancelled=lambda: True)
    assert [r.status for r in results] == ["cancelled", "cancelled"]


def test_save_writes_three_files_atomically(tmp_path):
    ok = PhotoResult(0, "dir/My Photo.JPG", "ok", {"localizability": 0.1}, None, b"tif", b"gpkg")
    paths = ok.save(tmp_path)
    assert {p.name for p in paths.values()} == {"My_Photo.tif", "My_Photo.gpkg", "My_Photo.json"}
    assert paths["geotiff"].read_bytes() == b"tif" and paths["gpkg"].read_bytes() == b"gpkg"
    assert json.loads(paths["json"].read_text())["localizability"] == 0.1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    failed = PhotoResult(1, "bad.jpg", "failed", None, {"code": "bad_image", "message": "empty"})
    only = failed.save(tmp_path, stem="custom")
    assert list(only) == ["json"] and json.loads(only["json"].read_text())["error"]["code"] == "bad_image"
