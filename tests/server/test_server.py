"""The real `geoplonk serve` over loopback: results, malformed input, several clients, cancel, bad photos."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pyogrio
import pytest
import shapely
import zmq
from PIL import Image

from geoplonk_service import protocol as P
from geoplonk_service.client import GeoPlonkClient, ServerError

from .conftest import FAST, TINY_CALIBRATED_CFG, jpeg_bytes


def read_geotiff(data: bytes) -> tuple[np.ndarray, dict]:
    """(band 1, profile + tags) from GeoTIFF bytes."""
    from rasterio.io import MemoryFile

    with MemoryFile(data) as memfile, memfile.open() as src:
        meta = dict(src.profile)
        meta["tags"] = src.tags()
        meta["bounds"] = tuple(src.bounds)
        meta["overviews"] = src.overviews(1)
        return src.read(1), meta


@pytest.fixture
def client(endpoint):
    with GeoPlonkClient(endpoint, timeout_s=60) as c:
        yield c


def test_info(client):
    info = client.info()
    assert info["protocol"] == P.PROTOCOL_VERSION
    assert info["default_model"] == "tiny-test"
    assert "tiny-test" in info["models"]
    assert info["device"] == "cpu"
    assert info["limits"]["max_image_bytes"] == P.MAX_IMAGE_BYTES


def test_progress_says_how_far_a_photo_is_by_the_last_photo_timed_with_the_same_settings(client):
    options = {**FAST, "top_k": 7}  # settings no other test uses: the server has timed no photo of them yet
    heard: list[dict] = []
    photos = [(f"p{i}.jpg", jpeg_bytes(i)) for i in range(3)]
    results = client.geolocate(photos, options, on_progress=heard.append)
    assert [r.status for r in results] == ["ok"] * 3
    first = [p for p in heard if p.get("index") == 0 and p["stage"] in P.PHOTO_STAGES]
    assert first and all(p["share"] is None for p in first)  # nothing timed yet: the client's own shares
    for index in (1, 2):  # [start, end] of each stage, from the photo before (photo by photo, in order)
        shares = {p["stage"]: p["share"] for p in heard if p.get("index") == index and p["stage"] in P.PHOTO_STAGES}
        assert list(shares) == list(P.PHOTO_STAGES), shares
        timings = results[index - 1].summary["timings"]
        total = sum(timings[stage] for stage in P.PHOTO_STAGES)
        bounds = [shares[stage] for stage in P.PHOTO_STAGES]
        assert bounds[0][0] == 0 and bounds[-1][1] == pytest.approx(1, abs=1e-3)
        assert all(a[1] == pytest.approx(b[0], abs=1e-3) for a, b in zip(bounds, bounds[1:], strict=False))
        for stage, (start, end) in shares.items():
            assert end - start == pytest.approx(timings[stage] / total, abs=2e-4), (stage, shares, timings)


def test_two_photos_give_two_valid_rasters_and_points(client, tmp_path):
    photos = [("paris.jpg", jpeg_bytes(1, gps=(48.85, 2.35))), ("plain.jpg", jpeg_bytes(2))]
    stages, heard = [], [time.monotonic()]

    def on_progress(p):
        stages.append(p["stage"])
        heard.append(time.monotonic())

    results = client.geolocate(photos, FAST, on_progress, on_result=lambda r: heard.append(time.monotonic()))
    assert [r.status for r in results] == ["ok", "ok"]
    assert max(np.diff(heard)) < 10.0, np.diff(heard)  # heartbeats (every 1 s): never a long silence
    assert {"decode", "embed", "sample", "density", "regions", "places", "write"} <= set(stages)
    for result in results:
        raster, meta = read_geotiff(result.geotiff)
        assert meta["crs"].to_epsg() == 4326
        assert meta["dtype"] == "float32" and meta["nodata"] is not None
        assert (raster >= 0).all()
        assert raster.sum(dtype=np.float64) == pytest.approx(1.0, abs=0.01)
        assert meta["overviews"]
        assert meta["tags"]["model"] == "tiny-test" and meta["tags"]["samples"] == "128"
        paths = result.save(tmp_path)
        _, _, geometry, _ = pyogrio.raw.read(paths["gpkg"], layer="samples")
        assert len(geometry) == 128
        pts = shapely.from_wkb(geometry)
        lon, lat = shapely.get_x(pts), shapely.get_y(pts)
        assert (np.abs(lat) <= 90).all() and (np.abs(lon) <= 180).all()
        layers = {name for name, _ in pyogrio.list_layers(paths["gpkg"])}
        assert layers == {"samples", "top_places", "credible_regions", "best_guess", "exif_truth"}
        summary = json.loads(paths["json"].read_text())
        assert [r["level"] for r in summary["credible_regions"]] == [0.5, 0.9, 0.99]
        assert -90 <= summary["best_guess"]["lat"] <= 90
        assert set(summary["timings"]) >= {"decode", "embed", "sample", "density", "regions", "places", "write"}
    exif = results[0].summary["exif"]
    assert exif["lat"] == pytest.approx(48.85, abs=1e-3) and exif["error_km"] >= 0
    assert results[1].summary["exif"] is None
    truth = pyogrio.raw.read(results[0].save(tmp_path / "a")["gpkg"], layer="exif_truth")
    assert len(truth[2]) == 1


def test_the_distribution_is_drawn_at_the_models_calibrated_guidance_unless_asked(client):
    photo = [("plain.jpg", jpeg_bytes(4))]
    maps = {}
    # the record says how the unguided field ran: held over each step only at a small |w| (sampling.holds_unguided)
    for options, expected, unguided in (({}, TINY_CALIBRATED_CFG, "every stage"),
                                        ({"cfg": -0.05}, -0.05, "held over each step"), ({"cfg": 0.0}, 0.0, None)):
        (result,) = client.geolocate(photo, {**FAST, **options})
        raster, meta = read_geotiff(result.geotiff)
        assert float(meta["tags"]["cfg"]) == expected and result.summary["options"]["cfg"] == expected
        assert meta["tags"].get("unguided_field") == unguided == result.summary["guidance"].get("unguided_field")
        maps[expected] = raster.astype(np.float64) / raster.sum(dtype=np.float64)
    # same seed, same start points: only another field can move the map (the tiny model moves it little)
    assert 0.5 * np.abs(maps[TINY_CALIBRATED_CFG] - maps[0.0]).sum() > 1e-3


def test_bf16_sampling_draws_the_same_map_as_fp32(client):
    """The default bf16 sampler only rounds the network's matmuls: its map matches the fp32 one. The GeoTIFF says
    which ran, and so does the summary: fp32 for a bf16 request on a CPU without bf16 dot products."""
    from model_server.engine.sampling import supported_precision

    photo = [("plain.jpg", jpeg_bytes(3))]
    maps = {}
    for precision in ("bf16", "fp32"):
        (result,) = client.geolocate(photo, {**FAST, "precision": precision})
        raster, meta = read_geotiff(result.geotiff)
        assert meta["tags"]["precision"] == supported_precision(precision, "cpu")
        assert result.summary["options"]["precision"] == meta["tags"]["precision"]
        maps[precision] = raster.astype(np.float64) / raster.sum(dtype=np.float64)
    total_variation = 0.5 * np.abs(maps["bf16"] - maps["fp32"]).sum()
    assert total_variation < 0.1, total_variation


def _raw_exchange(endpoint: str, frames: list[bytes]) -> dict:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        assert sock.poll(10_000), "no reply to a malformed message"
        return json.loads(sock.recv_multipart()[0])
    finally:
        sock.close()


@pytest.mark.parametrize(
    "frames, code",
    [
        ([b""], P.E_MALFORMED),
        ([b"this is not json"], P.E_MALFORMED),
        ([b"[1, 2]"], P.E_MALFORMED),
        ([json.dumps({"v": 99, "type": "info", "id": "x"}).encode()], P.E_VERSION),
        ([json.dumps({"v": 1, "type": "launch", "id": "x"}).encode()], P.E_UNKNOWN_TYPE),
        ([json.dumps({"v": 1, "type": "info"}).encode()], P.E_MALFORMED),
        ([json.dumps({"v": 1, "type": "info", "id": "x"}).encode(), b"extra"], P.E_MALFORMED),
        ([json.dumps({"v": 1, "type": "geolocate", "id": "x", "images": [{"name": "a"}, {"name": "b"}]}).encode(),
          b"only one blob"], P.E_MALFORMED),
        ([json.dumps({"v": 1, "type": "geolocate", "id": "x", "images": [{"name": "a"}],
                      "options": {"samples": 3}}).encode(), b"x"], P.E_BAD_OPTION),
        ([json.dumps({"v": 1, "type": "geolocate", "id": "x", "images": [{"name": "a"}],
                      "options": {"model": "no-such-model"}}).encode(), b"x"], P.E_MODEL),
        ([b"{" + b" " * (P.MAX_HEADER_BYTES + 10) + b"}"], P.E_TOO_LARGE),
        ([json.dumps({"v": 1, "type": "cancel", "id": "never-sent"}).encode()], P.E_MALFORMED),
    ],
)
def test_malformed_messages_get_errors_and_the_server_keeps_serving(endpoint, client, frames, code):
    reply = _raw_exchange(endpoint, frames)
    assert reply["type"] == P.ERROR and reply["code"] == code and reply["message"]
    assert client.info()["protocol"] == P.PROTOCOL_VERSION


@pytest.mark.parametrize("options", [{"resolution": 0.01}, {"resolution": 0.7}, {"solver": "rk45"}])
def test_whole_request_errors_raise_server_error(client, options):
    with pytest.raises(ServerError) as err:
        client.geolocate([("a.jpg", jpeg_bytes(3))], options)
    assert err.value.code == P.E_BAD_OPTION


def test_two_clients_interleaved_each_get_their_own_replies(endpoint):
    outcome: dict[str, list] = {}

    stale: list[tuple[str, dict]] = []

    def run(tag: str, seeds: list[int]):
        answered: set[int] = set()

        def on_progress(fields: dict) -> None:
            # while a request waits for its next turn, its heartbeats never repeat a finished photo's stage
            if fields.get("index") in answered:
                stale.append((tag, fields))

        with GeoPlonkClient(endpoint, timeout_s=60) as c:
            photos = [(f"{tag}-{s}.jpg", jpeg_bytes(s)) for s in seeds]
            outcome[tag] = [c.info()["protocol"]] + c.geolocate(
                photos, FAST, on_progress=on_progress, on_result=lambda r: answered.add(r.index))

    threads = [threading.Thread(target=run, args=(tag, seeds)) for tag, seeds in (("A", [10, 11, 12]), ("B", [20, 21]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for tag, seeds in (("A", [10, 11, 12]), ("B", [20, 21])):
        info, *results = outcome[tag]
        assert info == P.PROTOCOL_VERSION
        assert [r.name for r in results] == [f"{tag}-{s}.jpg" for s in seeds]
        assert all(r.ok for r in results)
    assert not stale, stale


def test_cancel_mid_batch(client):
    photos = [(f"p{i}.jpg", jpeg_bytes(100 + i)) for i in range(8)]
    seen = []
    t0 = time.monotonic()
    results = client.geolocate(photos, FAST, on_result=seen.append, is_cancelled=lambda: len(seen) >= 1)
    assert len(results) == 8
    statuses = [r.status for r in results]
    assert statuses.count("ok") >= 1
    assert statuses.count("cancelled") >= 4
    assert all(r.error["code"] == P.E_CANCELLED for r in results if r.status == "cancelled")
    assert time.monotonic() - t0 < 120
    # The server is free again at once.
    assert client.geolocate([("after.jpg", jpeg_bytes(5))], FAST)[0].ok


def _bomb_png() -> bytes:
    out = io.BytesIO()
    Image.new("1", (9000, 9000)).save(out, "PNG")  # 81 megapixels, a few kB
    return out.getvalue()


def test_bad_photos_fail_alone(client):
    good = jpeg_bytes(42)
    photos = [
        ("good-1.jpg", good),
        ("corrupt.jpg", good[: len(good) // 2]),
        ("empty.jpg", b""),
        ("text.jpg", b"this is a text file, not a photo\n" * 10),
        ("bomb.png", _bomb_png()),
        ("good-2.jpg", jpeg_bytes(43)),
    ]
    results = client.geolocate(photos, FAST)
    assert [r.status for r in results] == ["ok", "failed", "failed", "failed", "failed", "ok"]
    for r in results[1:5]:
        assert r.error["code"] == P.E_BAD_IMAGE and r.error["message"]
    assert "empty" in results[2].error["message"]
    assert "bomb" in results[4].error["message"]


def test_heic_photo_is_decoded(client):
    import pillow_heif

    out = io.BytesIO()
    pillow_heif.from_pillow(Image.open(io.BytesIO(jpeg_bytes(9)))).save(out, quality=60)
    result = client.geolocate([("phone.heic", out.getvalue())], FAST)[0]
    assert result.ok, result.error


def test_results_stream_photo_by_photo(client):
    """A batch's first result leaves before the later photos are sampled: the first answer costs one photo."""
    events: list[tuple] = []
    photos = [(f"s{i}.jpg", jpeg_bytes(300 + i)) for i in range(4)]
    results = client.geolocate(
        photos, FAST,
        on_progress=lambda f: events.append(("progress", f.get("stage"), f.get("index"))),
        on_result=lambda r: events.append(("result", r.name)),
    )
    assert all(r.ok for r in results)
    first_result = next(k for k, e in enumerate(events) if e[0] == "result")
    last_photo_sampled = [k for k, e in enumerate(events) if e[:3] == ("progress", "sample", 3)]
    assert last_photo_sampled, events
    assert first_result < last_photo_sampled[0], events


def test_the_best_guess_keeps_its_own_sampler_whatever_the_distributions(client):
    """The guided draws of the best guess take protocol.GUESS_SOLVER in GUESS_STEPS steps: the distribution's
    sampler moves the map, never the guess."""
    photo = [("plain.jpg", jpeg_bytes(5))]
    results = {}
    for solver, steps in (("euler", 3), ("rk3", 2)):
        (result,) = client.geolocate(photo, {**FAST, "solver": solver, "steps": steps})
        assert result.summary["options"]["solver"] == solver and result.summary["options"]["steps"] == steps
        results[solver] = result
    guesses = [(r.summary["best_guess"]["lat"], r.summary["best_guess"]["lon"]) for r in results.values()]
    assert guesses[0] == guesses[1]
    rasters = [read_geotiff(r.geotiff)[0].astype(np.float64) for r in results.values()]
    assert np.abs(rasters[0] / rasters[0].sum() - rasters[1] / rasters[1].sum()).sum() > 1e-3
