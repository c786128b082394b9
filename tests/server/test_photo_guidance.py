"""A model calibrated with a land rule: each photo's distribution is drawn at the w its own best-guess draws
pick, in the server's pipeline and on the command line alike."""

from __future__ import annotations

import pytest
import torch

from geoplonk_service import protocol as P
from model_server.engine.checkpoint import save_model_dir
from model_server.engine.model import clear_cache, load_model
from model_server.engine.network import FlowConfig, GeoAdaLNMLP
from model_server.engine.sampling import start_points
from model_server.images import decode_image
from model_server.photo_guidance import cfg_for_photo, guess_draws
from model_server.products.place_names import land_share
from model_server.server.pipeline import run_unit

from .conftest import FAST, jpeg_bytes
from .test_server import read_geotiff

LAND_CFG, OTHERS_CFG = -0.3, -0.1


@pytest.fixture
def rule_model(tmp_path):
    def make(threshold: float):
        clear_cache()
        torch.manual_seed(0)
        net = GeoAdaLNMLP(FlowConfig(cond_dim=1280, depth=2, dim=32))
        with torch.no_grad():
            for block in net.blocks:
                block.mlp[3].weight.normal_(0, 0.05)
        calibration = {"distribution_cfg": OTHERS_CFG, "land_cfg": LAND_CFG, "land_share_threshold": threshold}
        folder = save_model_dir(tmp_path / f"rule-{threshold}", net, {"name": "tiny-rule",
                                "encoder": "efficientnet-lite0", "calibration": calibration})
        return load_model(str(folder))

    yield make
    clear_cache()


def locate(model, options: dict) -> tuple[dict, dict]:
    out = []

    def emit(kind, *args):
        if kind == "result":
            _, status, summary, error, blobs = args
            assert status == P.STATUS_OK, error
            out.append((summary, read_geotiff(blobs[0])[1]["tags"]))

    run_unit(model, "cpu", ["p.jpg"], [jpeg_bytes(11)], [0], P.validate_options({**FAST, **options}), emit,
             lambda: False)
    (result,) = out
    return result


def test_each_photo_is_drawn_at_the_w_its_guess_draws_pick(rule_model):
    for threshold in (1e-6, 1.0):
        model = rule_model(threshold)
        summary, tags = locate(model, {})
        share = summary["guidance"]["guess_land_share"]
        # the share is that of the photo's own guess draws, from the request's start points
        emb = model.encoder.embed([decode_image(jpeg_bytes(11))])
        x0 = start_points(FAST["samples"], 0)[: min(P.GUESS_SAMPLES, FAST["samples"])]
        assert share == pytest.approx(land_share(guess_draws(model.flow, emb, x0=x0)[0].numpy()), abs=1e-4)
        assert 0 < share < 1, "a photo whose draws fall on land and at sea tells the two thresholds apart"
        expected = LAND_CFG if share >= threshold else OTHERS_CFG
        assert summary["options"]["cfg"] == expected and float(tags["cfg"]) == expected
        assert summary["guidance"]["source"] == "model" and "land-looking" in summary["guidance"]["rule"]
        # the command line's default w for the same photo follows the same rule
        default_x0 = start_points(P.SAMPLES.default, 0)[: P.GUESS_SAMPLES]  # the server's, at default options
        expected_share = land_share(guess_draws(model.flow, emb, x0=default_x0)[0].numpy())
        assert cfg_for_photo(model, emb) == (LAND_CFG if expected_share >= threshold else OTHERS_CFG)
    summary, tags = locate(model, {"cfg": 0.5})  # a request's own w wins, and says so
    assert summary["options"]["cfg"] == 0.5
    assert summary["guidance"] == {"source": "request", "unguided_field": "every stage"}  # beyond the hold's |w|
