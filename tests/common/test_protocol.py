"""Round trip of every message type through encode/decode, and the protocol's refusals."""

from __future__ import annotations

import json

import pytest

from geoplonk_service import protocol as P


def roundtrip(msg: P.Message, allowed) -> P.Message:
    frames = P.encode(msg)
    assert all(isinstance(f, bytes) for f in frames)
    return P.decode(frames, allowed)


def test_info_request_and_reply():
    req = P.info_request()
    back = roundtrip(req, P.CLIENT_TYPES)
    assert (back.type, back.id, back.fields, back.blobs) == (P.INFO, req.id, {}, [])
    reply = P.Message(P.INFO, req.id, {"version": "0.1.0", "protocol": 1, "limits": {"max_image_bytes": 5}})
    assert roundtrip(reply, P.SERVER_TYPES).fields == reply.fields


def test_geolocate_carries_images_as_raw_blobs():
    images = [("a.jpg", b"\xff\xd8\x00binary\x00"), ("été/b.heic", bytes(range(256)))]
    req = P.geolocate_request(images, {"samples": 64})
    back = roundtrip(req, P.CLIENT_TYPES)
    assert back.type == P.GEOLOCATE and back.id == req.id
    assert back.fields["images"] == [{"name": "a.jpg"}, {"name": "été/b.heic"}]
    assert back.fields["options"] == {"samples": 64}
    assert back.blobs == [data for _, data in images]


def test_cancel_progress_done_error():
    for msg, allowed in [
        (P.cancel_request("r1"), P.CLIENT_TYPES),
        (P.progress_message("r1", "sample", 2, 5, index=None, name=None), P.SERVER_TYPES),
        (P.progress_message("r1", "write", 3, 5, index=3, name="x.jpg"), P.SERVER_TYPES),
        (P.done_message("r1", ok=3, failed=1, cancelled=1), P.SERVER_TYPES),
        (P.error_message("r1", P.E_BAD_OPTION, "option 'samples' must be ..."), P.SERVER_TYPES),
    ]:
        back = roundtrip(msg, allowed)
        assert (back.type, back.id, back.fields, back.blobs) == (msg.type, msg.id, msg.fields, [])


def test_result_ok_failed_cancelled():
    ok = P.result_message("r", 0, "a.jpg", P.STATUS_OK, {"best_guess": {"lat": 1.5, "lon": -2.0}}, None,
                          [b"TIFF", b"GPKG"])
    back = roundtrip(ok, P.SERVER_TYPES)
    assert back.fields["status"] == "ok" and back.fields["blobs"] == ["geotiff", "gpkg"]
    assert back.fields["summary"]["best_guess"] == {"lat": 1.5, "lon": -2.0}
    assert back.blobs == [b"TIFF", b"GPKG"]
    for status, code in ((P.STATUS_FAILED, P.E_BAD_IMAGE), (P.STATUS_CANCELLED, P.E_CANCELLED)):
        msg = P.result_message("r", 1, "b.jpg", status, None, {"code": code, "message": "why"})
        back = roundtrip(msg, P.SERVER_TYPES)
        assert back.fields == {"index": 1, "name": "b.jpg", "status": status, "error": {"code": code, "message": "why"}}
        assert back.blobs == []


@pytest.mark.parametrize(
    "frames, code",
    [
        ([], P.E_MALFORMED),
        ([b"\xff\xfe"], P.E_MALFORMED),
        ([b"null"], P.E_MALFORMED),
        ([json.dumps({"type": "info", "id": "a"}).encode()], P.E_VERSION),
        ([json.dumps({"v": 2, "type": "info", "id": "a"}).encode()], P.E_VERSION),
        ([json.dumps({"v": 1, "type": "info", "id": ""}).encode()], P.E_MALFORMED),
        ([json.dumps({"v": 1, "type": "info", "id": "x" * 129}).encode()], P.E_MALFORMED),
        ([json.dumps({"v": 1, "type": "result", "id": "a"}).encode()], P.E_UNKNOWN_TYPE),
        ([b" " * (P.MAX_HEADER_BYTES + 1)], P.E_TOO_LARGE),
        # NaN/Infinity are not JSON, `v` is an integer (true == 1 in Python), a key given twice
        ([b'{"v":1,"type":"info","id":"a","x":NaN}'], P.E_MALFORMED),
        ([b'{"v":1,"type":"info","id":"a","x":[-Infinity]}'], P.E_MALFORMED),
        ([b'{"v":true,"type":"info","id":"a"}'], P.E_VERSION),
        ([b'{"v":1.0,"type":"info","id":"a"}'], P.E_VERSION),
        ([b'{"v":1,"type":"info","id":"a","id":"b"}'], P.E_MALFORMED),
        ([b'{"v":1,"type":"info","id":"a","options":{"seed":1,"seed":2}}'], P.E_MALFORMED),
        ([b"[" * 100_000 + b"]" * 100_000], P.E_MALFORMED),  # nesting deeper than the parser's recursion
    ],
)
def test_decode_refuses(frames, code):
    with pytest.raises(P.ProtocolError) as err:
        P.decode(frames, P.CLIENT_TYPES)
    assert err.value.code == code


def test_renew_round_trips_and_is_a_client_type():
    back = roundtrip(P.renew_request("r1"), P.CLIENT_TYPES)
    assert (back.type, back.id, back.fields) == (P.RENEW, "r1", {})
    busy = P.Message(P.ERROR, "r1", {"code": P.E_BUSY, "message": "full", "retry_after_s": 1.0})
    assert roundtrip(busy, P.SERVER_TYPES).fields["retry_after_s"] == 1.0


def test_nan_is_never_sent():
    with pytest.raises(ValueError):
        P.encode(P.Message(P.PROGRESS, "r", {"x": float("nan")}))


def test_envelopes():
    assert P.split_envelope([b"id", b"{}", b"blob"]) == ([b"id"], [b"{}", b"blob"])
    assert P.split_envelope([b"id", b"", b"{}"]) == ([b"id", b""], [b"{}"])


def test_options():
    merged = P.validate_options({"samples": 64, "levels": [0.9, 0.5]})
    assert merged["samples"] == 64 and merged["levels"] == [0.5, 0.9] and merged["cfg"] is None
    assert P.validate_options({"cfg": -0.1})["cfg"] == -0.1  # a calibrated, wider distribution
    for bad in ({"samples": 3}, {"cfg": -1.5}, {"cfg": "auto"}, {"resolution": 0}, {"levels": [1.5]}, {"crop": 1},
                {"nope": 1}, {"samples": True}):
        with pytest.raises(P.ProtocolError) as err:
            P.validate_options(bad)
        assert err.value.code == P.E_BAD_OPTION


def test_precision_option_defaults_to_bf16_and_refuses_others():
    assert P.validate_options({})["precision"] == "bf16"
    assert P.validate_options({"precision": "fp32"})["precision"] == "fp32"
    with pytest.raises(P.ProtocolError, match="precision"):
        P.validate_options({"precision": "fp16"})


def test_claims_are_completed_and_checked_by_name():
    (claim,) = P.validate_options({"claims": [{"lat": 10, "lon": -20}]})["claims"]
    assert claim == {"lat": 10.0, "lon": -20.0, "source": "user", "label": ""}
    for bad, needle in (([{"lat": 91, "lon": 0}], "'claims'[0] needs 'lat'"),
                        ([{"lat": 0, "lon": 0}, {"lat": 0, "lon": True}], "'claims'[1] needs 'lon'"),
                        ([{"lat": 0, "lon": 0, "where": "x"}], "unknown key(s): where"),
                        ([{"lat": 0, "lon": 0, "label": "x" * 201}], "'label' must be a string"),
                        ({"lat": 0, "lon": 0}, "must be a list"),
                        ([{"lat": 0, "lon": 0}] * (P.MAX_CLAIMS + 1), "at most 256 claims")):
        with pytest.raises(P.ProtocolError, match=None) as err:
            P.validate_options({"claims": bad})
        assert err.value.code == P.E_BAD_OPTION and needle in str(err.value)


def test_aoi_shapes_are_checked_by_name():
    ring = [[170, -10], [190, -10], [190, 10], [170, 10], [170, -10]]
    merged = P.validate_options({"aoi": {"type": "Polygon", "coordinates": [ring]}, "aoi_weight": 0.1})
    assert merged["aoi_weight"] == 0.1
    for bad, needle in (({"type": "Polygon", "coordinates": [ring[:-1]]}, "ring 1 is not closed"),
                        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}, "at least 4"),
                        ({"type": "Polygon", "coordinates": [[[0, 95], [1, 1], [1, 0], [0, 95]]]},
                         "latitude in [-90, 90]"),
                        ({"type": "MultiPolygon", "coordinates": [[ring], []]}, "polygon 2 must be a non-empty"),
                        ({"type": "Polygon", "coordinates": [[[0, 0]] * (P.MAX_AOI_VERTICES + 1)]}, "positions"),
                        ({"type": "LineString", "coordinates": ring}, "Polygon or MultiPolygon")):
        with pytest.raises(P.ProtocolError) as err:
            P.validate_options({"aoi": bad})
        assert err.value.code == P.E_BAD_OPTION and needle in str(err.value), str(err.value)
    with pytest.raises(P.ProtocolError, match="aoi_weight"):
        P.validate_options({"aoi_weight": -0.1})


def test_a_geojson_documents_polygons_become_one_multipolygon():
    from geoplonk_service.geojson import AoiFileError, aoi_from_geojson

    square = [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": square}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "MultiPolygon", "coordinates": [square, square]}}]}
    assert aoi_from_geojson(doc) == {"type": "MultiPolygon", "coordinates": [square, square, square]}
    with pytest.raises(AoiFileError, match="feature 2 is a 'LineString'"):
        aoi_from_geojson({"type": "FeatureCollection", "features": [
            doc["features"][0], {"type": "Feature", "geometry": {"type": "LineString", "coordinates": []}}]})
    with pytest.raises(AoiFileError, match="no polygon"):
        aoi_from_geojson({"type": "FeatureCollection", "features": []})


def test_joint_and_done_messages_round_trip():
    joint = roundtrip(P.joint_message("r1", P.STATUS_OK, {"photos": []}, blobs=[b"t", b"g"]), P.SERVER_TYPES)
    assert joint.type == P.JOINT and joint.fields["blobs"] == ["geotiff", "gpkg"] and joint.blobs == [b"t", b"g"]
    done = roundtrip(P.done_message("r1", 2, 0, 0, joint=P.STATUS_OK), P.SERVER_TYPES)
    assert done.fields["joint"] == P.STATUS_OK
    assert "joint" not in P.done_message("r1", 1, 0, 0).fields
