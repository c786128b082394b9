"""Property-based fuzzing (hypothesis) of what the server reads from the network: the protocol decoder and
the image decoder.  Whatever the bytes, the decoder gives a Message or a ProtocolError, and decode_image an
RGB image or an ImageError: never another exception (which would fail a batch, or kill the socket thread).

`make test` runs GEOPLONK_FUZZ_EXAMPLES (default 200) cases per property; `make fuzz` runs many more and
prints how many ran.
"""

from __future__ import annotations

import io
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from geoplonk_service import protocol as P
from model_server.images import ImageError, decode_image

EXAMPLES = int(os.environ.get("GEOPLONK_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="GEOPLONK_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RAN: dict[str, int] = {}


def count(name: str) -> None:
    RAN[name] = RAN.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_cases():
    yield
    print("\nfuzz cases run: " + ", ".join(f"{k} {v}" for k, v in sorted(RAN.items())))


def check_decode(frames: list[bytes]) -> None:
    try:
        msg = P.decode(frames, P.CLIENT_TYPES)
    except P.ProtocolError as exc:
        assert exc.code in (P.E_MALFORMED, P.E_VERSION, P.E_UNKNOWN_TYPE, P.E_TOO_LARGE)
        return
    assert msg.type in P.CLIENT_TYPES and isinstance(msg.id, str) and 0 < len(msg.id) <= 128
    assert not {"v", "type", "id"} & set(msg.fields)
    assert msg.blobs == [bytes(f) for f in frames[1:]]


@FUZZ
@given(st.lists(st.binary(max_size=512), max_size=4))
def test_decoder_on_random_frames(frames):
    count("decoder/random-frames")
    check_decode(frames)


# No subnormal floats: the engine's tests flush denormals process-wide (engine.runtime), which hypothesis refuses.
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_subnormal=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
keys = st.sampled_from(["v", "type", "id", "options", "images", "x"]) | st.text(max_size=6)
values = (json_values | st.sampled_from([1, True, 1.0, "1", "info", "geolocate", "cancel", "renew", "", "x" * 129])
          | st.sampled_from(["NaN", "Infinity", "-Infinity"]))


@st.composite
def header_text(draw) -> bytes:
    """JSON-like header text: near-valid headers, repeated keys, NaN constants, cut or spliced at random."""
    pairs = draw(st.lists(st.tuples(keys, values), max_size=6))
    base = [("v", 1), ("type", draw(st.sampled_from(sorted(P.CLIENT_TYPES)))), ("id", "r1")]
    if draw(st.booleans()):
        pairs = base + pairs
    parts = []
    for key, value in pairs:
        text = value if value in ("NaN", "Infinity", "-Infinity") and draw(st.booleans()) else json.dumps(value)
        parts.append(f"{json.dumps(key)}:{text}")
    raw = ("{" + ",".join(parts) + "}").encode()
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=8)) + raw[cut + draw(st.integers(0, 3)):]
    return raw


@FUZZ
@given(header_text(), st.lists(st.binary(max_size=64), max_size=3))
def test_decoder_on_near_valid_headers(header, blobs):
    count("decoder/near-valid-headers")
    check_decode([header, *blobs])


def _seed_images() -> list[bytes]:
    out = []
    image = Image.new("RGB", (24, 16))
    image.putdata([(x * 10 % 256, y * 15 % 256, (x * y) % 256) for y in range(16) for x in range(24)])
    for fmt, kw in (("JPEG", {"quality": 80}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}),
                    ("WEBP", {}), ("TIFF", {"compression": "tiff_deflate"})):
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


def check_image(data: bytes) -> None:
    try:
        image = decode_image(data, max_bytes=P.MAX_IMAGE_BYTES)
    except ImageError as exc:
        assert str(exc)
        return
    assert image.mode == "RGB" and image.size[0] * image.size[1] > 0


@FUZZ
@given(st.binary(max_size=2048))
def test_decode_image_on_random_bytes(data):
    count("image/random-bytes")
    check_image(data)


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                     min_size=1, max_size=8),
       st.integers(0, 10**6), st.booleans())
def test_decode_image_on_mutated_real_images(seed, flips, cut, truncate):
    count("image/mutated-real")
    data = bytearray(SEEDS[seed])
    for pos, byte in flips:
        data[pos % len(data)] = byte
    if truncate:
        data = data[: cut % len(data)]
    check_image(bytes(data))


option_values = json_values | st.sampled_from([[{"lat": 1, "lon": 2}], {"type": "Polygon"}, 0.5, -1, [0.9]])
option_names = st.sampled_from(sorted(P.DEFAULT_OPTIONS)) | st.text(max_size=6)
coordinates = st.floats(-400, 400, allow_subnormal=False) | st.integers(-400, 400) | st.text(max_size=2)
positions = st.lists(st.lists(coordinates, min_size=0, max_size=3), min_size=0, max_size=7)


@FUZZ
@given(st.dictionaries(option_names, option_values, max_size=5))
def test_options_validate_or_are_refused_by_name(options):
    """Any JSON options give validated options or a bad_option ProtocolError: never another exception."""
    count("options/random")
    try:
        merged = P.validate_options(options)
    except P.ProtocolError as exc:
        assert exc.code == P.E_BAD_OPTION and str(exc)
        return
    assert set(merged) == set(P.DEFAULT_OPTIONS)


@FUZZ
@given(st.sampled_from(["Polygon", "MultiPolygon"]), st.lists(positions, max_size=3), st.booleans())
def test_areas_of_interest_are_usable_or_refused_by_name(kind, rings, close):
    """A polygon the protocol lets through is either usable by the server or refused with an AoiError."""
    from model_server.products.aoi import AoiError, aoi_geometry, aoi_mask
    from model_server.products.grid import Grid

    count("options/aoi")
    if close:
        rings = [[*ring, ring[0]] if ring else ring for ring in rings]
    aoi = {"type": kind, "coordinates": [rings] if kind == "MultiPolygon" else rings}
    try:
        P.validate_options({"aoi": aoi})
    except P.ProtocolError as exc:
        assert exc.code == P.E_BAD_OPTION
        return
    try:
        geometry = aoi_geometry(aoi)
    except AoiError as exc:
        assert str(exc)
        return
    assert aoi_mask(geometry, Grid.global_grid(10.0)).any()
