"""The analyst tools through the real server and `geoplonk locate`: claim checks, the area-of-interest prior,
the joint map and the case report; bad claims and polygons refused by name while the server keeps serving."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest

from geoplonk_service import protocol as P
from geoplonk_service.client import GeoPlonkClient, ServerError
from model_server.products.joint import JOINT_ALPHA

from .conftest import FAST, jpeg_bytes
from .test_locate import fast_args, locate
from .test_server import read_geotiff

# A box over the Pacific that crosses the antimeridian, as GeoJSON asks: split at +-180.
PACIFIC = {"type": "MultiPolygon", "coordinates": [
    [[[170, -20], [180, -20], [180, 10], [170, 10], [170, -20]]],
    [[[-180, -20], [-160, -20], [-160, 10], [-180, 10], [-180, -20]]]]}


@pytest.fixture
def client(endpoint):
    with GeoPlonkClient(endpoint, timeout_s=60) as c:
        yield c


def in_pacific(lat: float, lon: float) -> bool:
    return -20 <= lat <= 10 and (lon >= 170 or lon <= -160)


def test_claims_are_checked_in_the_summary_and_the_geopackage(client, tmp_path):
    options = {**FAST, "claims": [{"lat": 10.0, "lon": 20.0, "source": "click", "label": "the analyst's point"}],
               "claim_exif": True}
    (result,) = client.geolocate([("geo.jpg", jpeg_bytes(41, gps=(-33.9, 151.2)))], options)
    assert result.ok, result.error
    claims = result.summary["claims"]
    assert [(c["source"], c["label"]) for c in claims] == [("click", "the analyst's point"), ("exif", "EXIF GPS")]
    for claim in claims:
        assert 0.0 <= claim["credible_level"] <= 1.0 and claim["words"].startswith(claim["verdict"])
        assert [r["level"] for r in claim["regions"]] == result.summary["options"]["levels"]
    path = tmp_path / "geo.gpkg"
    path.write_bytes(result.gpkg)
    assert pyogrio.read_info(path, layer="claims")["features"] == 2
    (plain,) = client.geolocate([("plain.jpg", jpeg_bytes(42))], {**FAST, "claim_exif": True})
    assert plain.summary["claims"] == [] and any("no EXIF GPS" in w for w in plain.summary["warnings"])


def test_a_hard_area_of_interest_restricts_every_product(client):
    (result,) = client.geolocate([("p.jpg", jpeg_bytes(43))], {**FAST, "aoi": PACIFIC})
    assert result.ok, result.error
    s = result.summary
    assert s["aoi"]["weight"] == 0.0 and 0 < s["aoi"]["prior_mass"] <= 1 and s["aoi"]["area_km2"] > 1e6
    assert in_pacific(s["best_guess"]["lat"], s["best_guess"]["lon"])
    assert all(in_pacific(p["lat"], p["lon"]) for p in s["top_places"])
    prob, meta = read_geotiff(result.geotiff)
    lat = 90 - (np.arange(prob.shape[0]) + 0.5) * 2.0
    lon = -180 + (np.arange(prob.shape[1]) + 0.5) * 2.0
    inside = np.array([[in_pacific(a, o) for o in lon] for a in lat])
    assert prob[inside].sum() == pytest.approx(1.0, abs=1e-5) and prob[~inside].max() == 0.0
    assert meta["tags"]["aoi_weight"] == "0"


def test_a_soft_area_of_interest_keeps_some_mass_outside(client):
    (hard,) = client.geolocate([("p.jpg", jpeg_bytes(43))], {**FAST, "aoi": PACIFIC})
    (soft,) = client.geolocate([("p.jpg", jpeg_bytes(43))], {**FAST, "aoi": PACIFIC, "aoi_weight": 0.2})
    m = hard.summary["aoi"]["prior_mass"]
    prob, _ = read_geotiff(soft.geotiff)
    outside = 1.0 - (prob.sum() - prob[read_geotiff(hard.geotiff)[0] == 0].sum())
    # the soft prior's mass outside: 0.2 (1 - m) / (0.2 (1 - m) + m)
    assert outside == pytest.approx(0.2 * (1 - m) / (0.2 * (1 - m) + m), rel=1e-3)


@pytest.mark.parametrize("options, needle", [
    ({"claims": [{"lat": 95, "lon": 0}]}, "option 'claims'[0] needs 'lat'"),
    ({"claims": [{"lat": 10, "lon": 0, "source": "gossip"}]}, "'source' must be one of"),
    ({"aoi": {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}},
     "not a valid polygon"),
    ({"aoi": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0.5]]]}}, "is not closed"),
    ({"aoi": {"type": "Point", "coordinates": [0, 0]}}, "Polygon or MultiPolygon"),
    ({"aoi": PACIFIC, "aoi_weight": 2}, "option 'aoi_weight' must be a number in [0, 1]"),
])
def test_bad_claims_and_polygons_are_refused_by_name_and_the_server_keeps_serving(client, options, needle):
    with pytest.raises(ServerError) as err:
        client.geolocate([("a.jpg", jpeg_bytes(3))], {**FAST, **options})
    assert err.value.code == P.E_BAD_OPTION and needle in err.value.message
    assert client.info()["protocol"] == P.PROTOCOL_VERSION


def test_locate_checks_claims_and_restricts_to_an_area_from_a_geojson_file(endpoint, tmp_path):
    photo = tmp_path / "tile.jpg"
    photo.write_bytes(jpeg_bytes(44, gps=(5.0, 175.0)))
    aoi = tmp_path / "pacific.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "west"}, "geometry": {"type": "Polygon",
                                                                         "coordinates": PACIFIC["coordinates"][0]}},
        {"type": "Feature", "properties": {"name": "east"}, "geometry": {"type": "Polygon",
                                                                         "coordinates": PACIFIC["coordinates"][1]}}]}))
    out = tmp_path / "out"
    proc = locate(str(photo), "--out", str(out), "--endpoint", endpoint, *fast_args(), "--claim=-10,-170",
                  "--claim-exif", "--aoi", str(aoi), "--aoi-weight", "0.5")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "tile.json").read_text())
    assert [c["source"] for c in summary["claims"]] == ["user", "exif"]
    assert summary["aoi"]["weight"] == 0.5
    assert summary["options"]["aoi"]["type"] == "MultiPolygon"


@pytest.mark.parametrize("args, needle", [
    (["--claim", "95,0"], "needs 'lat' as a number in [-90, 90]"),
    (["--claim", "north"], "a claim is LAT,LON"),
    (["--aoi", "missing.geojson"], "cannot read missing.geojson"),
    (["--aoi-weight", "0.5"], "--aoi-weight needs --aoi"),
])
def test_locate_refuses_bad_claims_and_areas(tmp_path, args, needle):
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes(1))
    proc = locate(str(tmp_path / "x.jpg"), "--out", str(tmp_path / "o"), *args)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr


def test_locate_refuses_a_geojson_of_points(tmp_path):
    bad = tmp_path / "points.geojson"
    bad.write_text(json.dumps({"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}))
    proc = locate(str(tmp_path / "x.jpg"), "--out", str(tmp_path / "o"), "--aoi", str(bad))
    assert proc.returncode == 2 and "is a 'Point', not a polygon" in proc.stderr, proc.stderr


def test_a_joint_jobs_progress_counts_every_photo(client, tmp_path):
    """The client's `fraction` counts a photo it could not read as done and the combined map as one more unit,
    made after the photos; `index` names the caller's photo."""
    photos = [tmp_path / "missing.jpg", ("a.jpg", jpeg_bytes(60)), ("b.jpg", jpeg_bytes(61))]
    seen: list[dict] = []
    results, joint = client.geolocate_joint(photos, FAST, on_progress=seen.append)
    assert [r.status for r in results] == ["failed", "ok", "ok"] and joint.ok
    fractions = [p["fraction"] for p in seen]
    assert fractions == sorted(fractions) and fractions[0] == pytest.approx(1 / 4), fractions
    joint_stages = [p for p in seen if p["stage"] == "joint"]
    assert joint_stages and all(p["fraction"] == pytest.approx(3 / 4) for p in joint_stages), seen
    assert fractions[-1] == pytest.approx(3 / 4), fractions  # the caller completes the bar with the joint result
    named = [(p["index"], p["name"]) for p in seen if isinstance(p.get("index"), int) and p.get("name")]
    assert named and all(name == photos[i][0] for i, name in named), named


def test_a_joint_request_streams_each_photo_then_one_combined_map(client):
    photos = [(f"j{i}.jpg", jpeg_bytes(50 + i, gps=(10.0, 20.0) if i == 0 else None)) for i in range(3)]
    order = []
    results, joint = client.geolocate_joint(photos + [("broken.jpg", b"not a photo")],
                                            {**FAST, "claim_exif": True},
                                            on_result=lambda r: order.append(r.name))
    assert [r.status for r in results] == ["ok", "ok", "ok", "failed"] and len(order) == 4
    assert joint.ok, joint.error
    s = joint.summary
    assert [p["name"] for p in s["joint"]["photos"]] == ["j0.jpg", "j1.jpg", "j2.jpg"]
    assert s["joint"]["left_out"] == [{"index": 3, "name": "broken.jpg"}]
    assert [c["name"] for c in s["joint"]["contributions"]] == ["j0.jpg", "j1.jpg", "j2.jpg"]
    assert all(c["kl_nats"] >= 0 for c in s["joint"]["contributions"])
    assert [c["label"] for c in s["claims"]] == ["EXIF GPS of j0.jpg"]
    prob, meta = read_geotiff(joint.geotiff)
    assert prob.sum() == pytest.approx(1.0, abs=1e-4) and meta["tags"]["joint_photos"] == "3"
    assert s["options"]["precision"] == meta["tags"]["precision"] == results[0].summary["options"]["precision"]
    assert -0.3 < s["localizability"] and s["credible_regions"][0]["area_km2"] > 0


def test_a_cancelled_joint_request_answers_its_joint_map_cancelled(client):
    photos = [(f"c{i}.jpg", jpeg_bytes(60 + i)) for i in range(4)]
    seen = []
    results, joint = client.geolocate_joint(photos, FAST, on_result=seen.append, is_cancelled=lambda: len(seen) >= 1)
    assert joint.status == P.STATUS_CANCELLED
    assert any(r.status == P.STATUS_CANCELLED for r in results)
    assert client.info()["protocol"] == P.PROTOCOL_VERSION


def test_locate_joint_writes_the_combined_map_beside_the_photos(endpoint, tmp_path):
    folder = tmp_path / "place"
    folder.mkdir()
    for i in range(2):
        (folder / f"view{i}.jpg").write_bytes(jpeg_bytes(70 + i))
    out = tmp_path / "out"
    proc = locate(str(folder), "--out", str(out), "--endpoint", endpoint, *fast_args(), "--joint")
    assert proc.returncode == 0, proc.stderr
    assert "joint map of 2 photos" in proc.stdout
    doc = json.loads((out / "joint.json").read_text())
    assert doc["status"] == "ok" and len(doc["joint"]["contributions"]) == 2
    assert (out / "joint.tif").stat().st_size > 0 and (out / "view0.tif").is_file()


def test_locate_report_writes_a_self_contained_case_report(endpoint, tmp_path):
    import base64
    import hashlib
    import io
    import re

    from PIL import Image

    photo = tmp_path / "case.jpg"
    photo.write_bytes(jpeg_bytes(80, gps=(48.85, 2.35)))
    out = tmp_path / "out"
    proc = locate(str(photo), "--out", str(out), "--endpoint", endpoint, *fast_args(), "--report", "--claim-exif",
                  "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    text = (out / "case.html").read_text()
    summary = json.loads((out / "case.json").read_text())
    assert hashlib.sha256(photo.read_bytes()).hexdigest() in text and summary["model_sha256"] in text
    assert len(summary["model_sha256"]) == 64 and summary["photo_sha256"] in text
    assert summary["claims"][0]["words"].split(":")[0] in text and "Top places" in text and "90 %" in text
    assert "&quot;seed&quot;: 7" in text and summary["software_version"] in text and " UTC" in text
    assert "src='http" not in text and "<script" not in text  # self-contained, nothing fetched
    (png,) = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    with Image.open(io.BytesIO(base64.b64decode(png))) as picture:
        assert picture.format == "PNG" and picture.size[0] == 900
    again = locate(str(photo), "--out", str(out), "--endpoint", endpoint, *fast_args(), "--report", "--claim-exif",
                   "--seed", "7")
    assert again.returncode == 0 and "already done" in again.stdout
    (out / "case.html").unlink()  # a missing report makes the photo due again
    third = locate(str(photo), "--out", str(out), "--endpoint", endpoint, *fast_args(), "--report", "--claim-exif",
                   "--seed", "7")
    assert third.returncode == 0 and "already done" not in third.stdout and (out / "case.html").is_file()


def test_locate_joint_report(endpoint, tmp_path):
    for i in range(2):
        (tmp_path / f"v{i}.jpg").write_bytes(jpeg_bytes(90 + i))
    out = tmp_path / "out"
    proc = locate(str(tmp_path / "v0.jpg"), str(tmp_path / "v1.jpg"), "--out", str(out), "--endpoint", endpoint,
                  *fast_args(), "--joint", "--report")
    assert proc.returncode == 0, proc.stderr
    text = (out / "joint.html").read_text()
    assert "Joint map of several photos" in text and "v0.jpg" in text and "v1.jpg" in text
    assert (out / "v0.html").is_file()


def test_a_joint_map_takes_the_area_of_interest_once(client):
    photos = [(f"a{i}.jpg", jpeg_bytes(95 + i)) for i in range(2)]
    results, joint = client.geolocate_joint(photos, {**FAST, "aoi": PACIFIC, "aoi_weight": 0.0})
    assert joint.ok and all(r.ok for r in results)
    s = joint.summary
    assert s["aoi"]["weight"] == 0.0 and in_pacific(s["best_guess"]["lat"], s["best_guess"]["lon"])
    assert s["joint"]["exponent"] == pytest.approx(2 ** -JOINT_ALPHA)
    prob, _ = read_geotiff(joint.geotiff)
    lat = 90 - (np.arange(prob.shape[0]) + 0.5) * 2.0
    lon = -180 + (np.arange(prob.shape[1]) + 0.5) * 2.0
    inside = np.array([[in_pacific(a, o) for o in lon] for a in lat])
    assert prob[~inside].max() == 0.0 and prob[inside].sum() == pytest.approx(1.0, abs=1e-5)


def test_a_joint_request_whose_photos_all_fail_answers_its_joint_map_failed(client):
    results, joint = client.geolocate_joint([("bad.jpg", b"not a photo"), ("empty.jpg", b"")], FAST)
    assert [r.status for r in results] == ["failed", "failed"]
    assert joint.status == P.STATUS_FAILED and "no photo" in joint.error["message"]


def test_sigterm_answers_an_open_joint_request_cancelled_then_done(tiny_model):
    import signal
    import threading
    import time

    from .test_faults import start

    srv = start(tiny_model, "--batch-size", "1", "--no-preload")
    got: list = []
    outcome: dict = {}

    def job():
        with GeoPlonkClient(srv.endpoint, timeout_s=30) as c:
            outcome["results"], outcome["joint"] = c.geolocate_joint(
                [(f"s{i}.jpg", jpeg_bytes(i)) for i in range(5)], {"samples": 1024, "steps": 32, "resolution": 1.0},
                on_result=got.append)

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 120
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got, "no photo finished within 120 s"
    srv.process.send_signal(signal.SIGTERM)
    assert srv.process.wait(timeout=30) == 0, srv.stderr_tail()
    thread.join(30)
    assert outcome["joint"].status == P.STATUS_CANCELLED
    assert outcome["results"][-1].status == P.STATUS_CANCELLED
