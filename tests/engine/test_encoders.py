"""Encoders: preprocessing as each model was trained, embeddings as the reference defines them.

The transformers encoders are exercised with tiny random models saved by the test in the
same formats as the real ones (save_pretrained), since no real weights can be fetched here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model_server.engine import encoders
from model_server.engine.encoders import EncoderNotFoundError, load_encoder, query_encoder_name


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A smooth random image (gradients + noise), so resampling differences would show."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def test_centre_crop_matches_torchvision_offsets():
    img = photo(101, 50)
    square = encoders.center_square(img)
    assert square.size == (50, 50)
    # torchvision: left = round((101 - 50) / 2) = round(25.5) = 26 (round half to even)
    assert np.array_equal(np.asarray(square), np.asarray(img)[:, 26:76])
    assert encoders.resize_shorter(photo(300, 200), 224).size == (336, 224)
    assert encoders.resize_shorter(photo(200, 301), 224).size == (224, 337)


@pytest.fixture(scope="module")
def lite0():
    return load_encoder("efficientnet-lite0")


def test_efficientnet_lite0_pooled_features(lite0):
    images = [photo(320, 240, s) for s in range(5)] + [photo(200, 400, 9).convert("L")]
    emb = lite0.embed(images)
    assert emb.shape == (6, 1280) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all() and (emb.std(dim=0) > 0).any()
    # batched == one at a time (no cross-talk), and deterministic
    lite0.batch_size = 4
    assert torch.allclose(lite0.embed(images[:1])[0], emb[0], atol=1e-5)
    assert torch.equal(lite0.embed(images), emb)
    # pooled features of the classifier's own path: avg-pool(extract_features) of the normalised crop
    pixels = torch.from_numpy(lite0.preprocess(images[0]))[None]
    expected = torch.nn.functional.adaptive_avg_pool2d(lite0.net.extract_features(pixels), 1).flatten(1)
    assert torch.allclose(emb[:1], expected, atol=1e-5)
    assert pixels.shape == (1, 3, 224, 224) and -1.0 <= pixels.min() and pixels.max() <= 1.0


def test_cpu_micro_batches_give_the_one_pass_features(lite0):
    """A few images per pass on the CPU (small activations, no page-fault storm) changes no feature."""
    n = 2 * encoders.CPU_MICRO_BATCH + 1
    pixels = torch.stack([torch.from_numpy(lite0.preprocess(photo(240, 240, s))) for s in range(n)])
    micro, one_pass = lite0.forward_batch(pixels), lite0.features_in_one_pass(pixels)
    assert micro.shape == (n, 1280)
    assert torch.equal(micro[:-1], one_pass[:-1])  # whole micro-batches: bit for bit
    assert torch.allclose(micro, one_pass, atol=1e-5)  # a lone last image may take another kernel


def test_view_averaging_makes_embeddings_orientation_free(lite0):
    image = photo(224, 224, 3)
    turned, mirrored = image.transpose(Image.ROTATE_90), image.transpose(Image.FLIP_LEFT_RIGHT)
    plain = lite0.embed([image, turned, mirrored])
    assert (plain[0] - plain[1]).abs().max() > 1e-2  # ImageNet features see the orientation
    rot4 = load_encoder("efficientnet-lite0+rot4")
    assert rot4.name == "efficientnet-lite0+rot4" and rot4.dim == 1280
    emb = rot4.embed([image, turned, mirrored])
    assert torch.allclose(emb[0], emb[1], atol=1e-4)
    assert (emb[0] - emb[2]).abs().max() > 1e-2  # a quarter-turn average still sees a mirror image
    d8 = load_encoder("efficientnet-lite0+d8").embed([image, turned, mirrored])
    assert torch.allclose(d8[0], d8[2], atol=1e-4) and torch.allclose(d8[0], d8[1], atol=1e-4)
    # the average of the four turned copies' own embeddings
    assert torch.allclose(emb[0], lite0.embed([image.rotate(90 * k) for k in range(4)]).mean(0), atol=1e-4)
    with pytest.raises(ValueError, match="unknown views 'rot3'"):
        load_encoder("efficientnet-lite0+rot3")


def test_query_views_replace_the_training_views():
    """A model trained on quarter-turn means may locate photos by eight views."""
    assert query_encoder_name("efficientnet-lite0+rot4", "d8") == "efficientnet-lite0+d8"
    assert query_encoder_name("efficientnet-lite0", "rot4") == "efficientnet-lite0+rot4"
    assert query_encoder_name("efficientnet-lite0+rot4", None) == "efficientnet-lite0+rot4"


def test_empty_batch_and_unknown_names(lite0):
    assert lite0.embed([]).shape == (0, 1280)
    with pytest.raises(ValueError, match="unknown encoder"):
        load_encoder("resnet")
    with pytest.raises(EncoderNotFoundError, match="weights folder"):
        load_encoder("streetclip")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A tiny full CLIPModel saved like geolocal/StreetCLIP (vision + text towers, processor config)."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=336, patch_size=56),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4),
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("streetclip")
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(folder)
    return folder


def test_streetclip_is_cls_before_post_layernorm(tiny_clip_dir):
    from transformers import CLIPImageProcessorPil, CLIPVisionModel

    enc = load_encoder("streetclip", tiny_clip_dir)
    images = [photo(500, 380, 1), photo(300, 450, 2)]
    emb = enc.embed(images)
    assert enc.dim == 32 and emb.shape == (2, 32)
    model = CLIPVisionModel.from_pretrained(tiny_clip_dir, local_files_only=True).eval()
    pixels = CLIPImageProcessorPil.from_pretrained(tiny_clip_dir)(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 336, 336)
    with torch.no_grad():
        out = model(pixel_values=pixels)
    assert torch.allclose(emb, out.last_hidden_state[:, 0], atol=1e-5)
    assert not torch.allclose(emb, out.pooler_output, atol=1e-3)  # pooler = after post_layernorm


@pytest.fixture(scope="module")
def tiny_dino_dir(tmp_path_factory):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    config = Dinov2WithRegistersConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=56, patch_size=14, num_register_tokens=4)
    folder = tmp_path_factory.mktemp("dinov2")
    Dinov2WithRegistersModel(config).save_pretrained(folder)
    return folder


def test_dinov2_reg_is_normed_cls_of_centre_square_at_336(tiny_dino_dir):
    from transformers import Dinov2WithRegistersModel

    enc = load_encoder("dinov2-reg", tiny_dino_dir)
    img = photo(500, 340, 3)
    emb = enc.embed([img])
    # independent preprocessing: crop the centred square by array slicing, resize, ImageNet-normalise
    arr = np.asarray(img)
    left = int(round((500 - 340) / 2))
    square = Image.fromarray(arr[:, left : left + 340]).resize((336, 336), Image.BICUBIC)
    x = (np.asarray(square, dtype=np.float32) / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    pixels = torch.from_numpy(x.transpose(2, 0, 1).astype(np.float32))[None]
    model = Dinov2WithRegistersModel.from_pretrained(tiny_dino_dir, local_files_only=True).eval()
    with torch.no_grad():
        out = model(pixel_values=pixels)
    assert torch.allclose(emb, out.pooler_output, atol=1e-5)
    assert torch.allclose(out.pooler_output, out.last_hidden_state[:, 0], atol=1e-6)  # CLS after the final norm
