"""Model cards in `info`, and the warning when a photo is not the kind of view its model was made for ."""

from __future__ import annotations

import io

from PIL import Image

from model_server.engine.checkpoint import read_manifest
from model_server.engine.model import find_model_dir
from model_server.server.models import camera_exif, model_card, model_cards, photo_warnings


def jpeg(size, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 60)).save(buf, "JPEG", exif=exif if exif is not None else Image.Exif())
    return buf.getvalue()


def camera() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS 5D"
    exif.get_ifd(0x8769)[0x920A] = 35.0
    return exif


def test_the_default_models_card_says_overhead_views_encoder_and_licence():
    (card,) = [c for c in model_cards(None) if c["name"] == "earth-tiles"]
    assert card["imagery"] == "overhead"
    assert "overhead views" in card["purpose"] and "not ground photos" in card["purpose"]
    assert card["encoder"] == "efficientnet-lite0+rot4"
    assert card["licence"].startswith("Weights: MIT")
    assert card["card"].startswith("earth-tiles: for overhead views") and "\n" not in card["card"]


def test_a_card_names_the_query_encoder_and_its_views_make_it_overhead():
    card = model_card("mine", {"encoder": {"name": "efficientnet-lite0", "views": "rot4"}})
    assert (card["encoder"], card["imagery"]) == ("efficientnet-lite0+rot4", "overhead")
    assert model_card("street", {"encoder": "streetclip"})["imagery"] == "ground"


def test_a_ground_model_without_manifest_gets_a_bare_card_and_no_warnings():
    card = model_card("PLONK_YFCC", None)
    assert card["imagery"] == "ground" and card["licence"] == "licence not stated"
    assert photo_warnings("PLONK_YFCC", None, jpeg((640, 480), camera()), (640, 480)) == []


def test_overhead_model_warns_on_camera_exif_and_on_a_non_square_frame():
    manifest = read_manifest(find_model_dir(None))
    assert camera_exif(jpeg((256, 256), camera())) == {"make": "Canon", "model": "EOS 5D", "focal length": "35 mm"}
    (exif_warning,) = photo_warnings("earth-tiles", manifest, jpeg((256, 256), camera()), (256, 256))
    assert "expects overhead views" in exif_warning and "Canon" in exif_warning
    (shape_warning,) = photo_warnings("earth-tiles", manifest, jpeg((640, 480)), (640, 480))
    assert "640 x 480" in shape_warning
    assert photo_warnings("earth-tiles", manifest, jpeg((224, 224)), (224, 224)) == []  # a tile: no warning
    assert len(photo_warnings("earth-tiles", manifest, jpeg((640, 480), camera()), (640, 480))) == 2


def test_a_focal_length_that_is_not_a_number_is_still_read_and_never_raises():
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif.get_ifd(0x8769)[0x920A] = "abc"  # FocalLength as text: seen in the wild
    out = io.BytesIO()
    Image.new("RGB", (64, 48)).save(out, "JPEG", exif=exif)
    found = camera_exif(out.getvalue())
    assert found["make"] == "PhoneMaker" and found["focal length"] == "abc"
