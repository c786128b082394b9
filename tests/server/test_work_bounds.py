"""Every photo's work is bounded (extreme shapes, samples x cells), cancel is prompt,
the same photo gives the same result in any batch, EXIF GPS out of range is refused with a reason."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import ExifTags, Image

from geoplonk_service import protocol as P
from geoplonk_service.client import GeoPlonkClient, ServerError
from model_server.images import MAX_ASPECT_RATIO, ImageError, decode_image, exif_gps

from .conftest import FAST, jpeg_bytes


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(out, "PNG", optimize=True)
    return out.getvalue()


EXTREME_SHAPES = [(1, 180_000), (180_000, 1), (1, 60_000), (3, 65_000), (21 * 50, 50)]


@pytest.mark.parametrize(("width", "height"), EXTREME_SHAPES)
def test_extreme_shapes_are_refused_before_any_large_allocation(width, height):
    data = png_bytes(width, height)
    assert len(data) < 20_000  # a tiny file
    t = time.perf_counter()
    with pytest.raises(ImageError, match="aspect ratio"):
        decode_image(data)
    assert time.perf_counter() - t < 1.0


def test_wide_but_real_panoramas_still_decode():
    image = decode_image(png_bytes(MAX_ASPECT_RATIO * 40, 40))
    assert image.size == (MAX_ASPECT_RATIO * 40, 40)
    assert decode_image(png_bytes(1, 1)).size == (1, 1)


@pytest.fixture
def client(endpoint):
    with GeoPlonkClient(endpoint, timeout_s=60) as c:
        yield c


def test_extreme_pngs_fail_alone_quickly_and_the_server_answers(client):
    """A few hundred bytes of PNG with an extreme shape fail alone, at once, before any large allocation."""
    photos = [(f"{w}x{h}.png", png_bytes(w, h)) for w, h in EXTREME_SHAPES[:3]]
    t = time.monotonic()
    results = client.geolocate(photos, FAST)
    assert time.monotonic() - t < 15
    assert [r.status for r in results] == ["failed", "failed", "failed"]
    for r in results:
        assert r.error["code"] == P.E_BAD_IMAGE and "aspect ratio" in r.error["message"]
    assert client.info()["protocol"] == P.PROTOCOL_VERSION
    assert client.geolocate([("ok.jpg", jpeg_bytes(3))], FAST)[0].ok


# --------------------------------------------------------------------------- work bound (samples x cells)

def test_samples_times_cells_is_bounded():
    with pytest.raises(P.ProtocolError) as err:
        P.validate_options({"samples": 65536, "steps": 1, "resolution": 0.05})
    assert err.value.code == P.E_BAD_OPTION
    assert "density raster" in str(err.value) and "max_sample_cells" in str(err.value)
    assert "331 samples" in str(err.value)  # what would fit at 0.05 degrees
    # the defaults and the documented examples stay allowed
    for options in ({}, {"samples": 8192}, {"samples": 1024, "resolution": 0.1}, {"samples": 65536, "resolution": 1}):
        P.validate_options(options)


def test_server_refuses_an_unbounded_request_and_reports_the_limit(client):
    with pytest.raises(ServerError) as err:
        client.geolocate([("a.jpg", jpeg_bytes(1))], {"samples": 65536, "steps": 1, "resolution": 0.05})
    assert err.value.code == P.E_BAD_OPTION and "max_sample_cells" in str(err.value)
    assert client.info()["limits"]["max_sample_cells"] == P.MAX_SAMPLE_CELLS


# --------------------------------------------------------------------------- cancel latency

def cancel_latency(endpoint: str, photos: list, options: dict, stage: str) -> tuple[float, list]:
    """Seconds from the client's cancel (sent once `stage` is reported) to the end of the request."""
    flag = threading.Event()
    when: list[float] = []

    def on_progress(p):
        if p.get("stage") == stage and not flag.is_set():
            when.append(time.monotonic())
            flag.set()

    with GeoPlonkClient(endpoint, timeout_s=60) as c:
        results = c.geolocate(photos, options, on_progress, is_cancelled=flag.is_set)
    assert when, f"stage {stage} never reported"
    return time.monotonic() - when[0], results


@pytest.mark.parametrize(("options", "stage", "bound_s"), [
    # many solver steps for several photos: the sampler stops between steps
    ({"samples": 8192, "steps": 1000, "resolution": 2.0, "solver": "heun"}, "sample", 5.0),
    # a large raster: the density stage stops between rows
    ({"samples": 8192, "steps": 1, "resolution": 0.25}, "density", 5.0),
    # the most samples allowed (one photo per unit), the most steps, the second-order solver
    ({"samples": 65536, "steps": 1000, "resolution": 1.0, "solver": "heun"}, "sample", 5.0),
    # the most samples at the finest resolution they may have: the bandwidths and the raster stop in blocks
    ({"samples": 65536, "steps": 1, "resolution": 1.0}, "density", 5.0),
    # the defaults
    ({}, "sample", 2.0),
    ({}, "density", 2.0),
])
def test_cancel_is_prompt_at_heavy_options(endpoint, options, stage, bound_s):
    """Cancel took 233 s at 8192 samples; the doc says the work stops as soon as the current step ends."""
    photos = [(f"c{i}.jpg", jpeg_bytes(200 + i)) for i in range(4)]
    latency, results = cancel_latency(endpoint, photos, {**options, "top_k": 3}, stage)
    print(f"cancel latency {latency:.2f} s at {options} in stage {stage}")
    assert latency < bound_s, latency
    assert len(results) == 4 and results[0].status == "cancelled"
    with GeoPlonkClient(endpoint, timeout_s=60) as c:  # and the server is free again
        assert c.geolocate([("after.jpg", jpeg_bytes(5))], FAST)[0].ok


# --------------------------------------------------------------------------- EXIF GPS

def jpeg_with_gps(lat_dms, lon_dms, lat_ref="N", lon_ref="E") -> bytes:
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: lat_ref, ExifTags.GPS.GPSLatitude: lat_dms,
        ExifTags.GPS.GPSLongitudeRef: lon_ref, ExifTags.GPS.GPSLongitude: lon_dms,
    }
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(out, "JPEG", exif=exif)
    return out.getvalue()


@pytest.mark.parametrize(("lat", "lon", "why"), [
    ((95.0, 0.0, 0.0), (2.0, 0.0, 0.0), "latitude 95 degrees is over 90"),
    ((48.0, 75.0, 0.0), (2.0, 0.0, 0.0), "75 minutes"),
    ((48.0, 10.0, 61.0), (2.0, 0.0, 0.0), "61 seconds"),
    ((48.0, 0.0, 0.0), (181.0, 0.0, 0.0), "longitude 181 degrees is over 180"),
])
def test_out_of_range_exif_gps_is_refused_with_a_reason(lat, lon, why):
    gps, problem = exif_gps(jpeg_with_gps(lat, lon))
    assert gps is None
    assert problem.startswith("EXIF GPS ignored") and why in problem


def test_valid_exif_gps_is_read():
    gps, problem = exif_gps(jpeg_with_gps((48.0, 51.0, 0.0), (2.0, 21.0, 0.0), "N", "W"))
    assert problem is None
    assert gps.lat == pytest.approx(48.85) and gps.lon == pytest.approx(-2.35)
    assert exif_gps(jpeg_bytes(1)) == (None, None)


def test_bad_exif_is_a_warning_in_the_summary_never_a_failure(client):
    result = client.geolocate([("bad-gps.jpg", jpeg_with_gps((48.0, 75.0, 0.0), (2.0, 0.0, 0.0)))], FAST)[0]
    assert result.ok, result.error
    assert result.summary["exif"] is None
    assert any("EXIF GPS ignored" in w and "75 minutes" in w for w in result.summary["warnings"])


# --------------------------------------------------------------------------- same photo, same result

def test_a_photo_gives_the_same_result_alone_or_in_a_batch(tmp_path):
    """Same photo and options, same result, alone or in a batch: batched convolutions (the rot4 views) and fp32
    matmuls round differently by batch, so each photo runs alone; GeoPackage bytes are fixed too.  A small
    flow on the default model's encoder checks all three."""
    import torch

    from model_server.engine.checkpoint import save_model_dir
    from model_server.engine.model import load_model
    from model_server.engine.network import FlowConfig, GeoAdaLNMLP
    from model_server.server.pipeline import run_unit

    torch.manual_seed(0)
    net = GeoAdaLNMLP(FlowConfig(cond_dim=1280, depth=2, dim=32))
    with torch.no_grad():
        for block in net.blocks:
            block.mlp[3].weight.normal_(0, 0.05)
    encoder = {"name": "efficientnet-lite0", "views": "rot4"}  # photos to locate as the mean of their quarter turns
    model = load_model(str(save_model_dir(tmp_path / "tiny-rot4", net, {"name": "tiny-rot4", "encoder": encoder})))
    names = [f"p{i}.jpg" for i in range(2)]
    blobs = [jpeg_bytes(300 + i, gps=(10.0 * i, 20.0 * i)) for i in range(2)]
    options = P.validate_options({**FAST, "crop": True, "precision": "fp32"})

    def run(indices: list[int]) -> dict[int, tuple]:
        out = {}

        def emit(kind, *args):
            if kind == "result":
                i, status, summary, error, blob = args
                assert status == P.STATUS_OK, error
                summary = {k: v for k, v in summary.items() if k != "timings"}
                out[i] = (summary, blob[0], blob[1])

        run_unit(model, "cpu", names, blobs, indices, options, emit, lambda: False)
        return out

    batch = run([0, 1])
    alone = run([1])
    assert alone[1][0] == batch[1][0]  # the summary, localizability included, to the last bit
    assert alone[1][1] == batch[1][1]  # GeoTIFF bytes
    assert alone[1][2] == batch[1][2]  # GeoPackage bytes (two runs: no clock inside)
