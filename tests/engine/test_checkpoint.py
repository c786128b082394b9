"""Model folders: published format, HF cache layouts, fp16, manifest hashes, clear errors."""

from __future__ import annotations

import json
import os

import pytest
import torch

from model_server.engine import checkpoint
from model_server.engine.checkpoint import ModelNotFoundError, load_flow, save_model_dir, verify_files
from model_server.engine.network import FlowConfig, GeoAdaLNMLP

from .test_oracle import randomise

SMALL = FlowConfig(cond_dim=16, depth=2, dim=32)


@pytest.fixture
def net():
    n = GeoAdaLNMLP(SMALL)
    randomise(n, 0)
    return n.eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_is_bit_exact(tmp_path, net):
    out = save_model_dir(tmp_path / "m", net, {"name": "tiny"})
    assert json.loads((out / "config.json").read_text()) == SMALL.to_dict()
    assert same_weights(load_flow(out), net)
    manifest = checkpoint.read_manifest(out)
    assert manifest["name"] == "tiny" and set(manifest["files"]) == {"config.json", "model.safetensors"}
    assert verify_files(out) == []


def test_fp16_weights_load_back_as_fp32(tmp_path, net):
    out = save_model_dir(tmp_path / "m16", net, dtype=torch.float16)
    assert (out / "model.safetensors").stat().st_size < 0.6 * (
        save_model_dir(tmp_path / "m32", net).joinpath("model.safetensors").stat().st_size
    )
    loaded = load_flow(out)
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.allclose(v, net.state_dict()[k], rtol=1e-3, atol=1e-4)
    assert torch.equal(loaded.time_embedder.encode_time.freqs, net.time_embedder.encode_time.freqs)


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path, net):
    save_model_dir(tmp_path / "m", net)
    other = GeoAdaLNMLP(SMALL)
    randomise(other, 1)
    save_model_dir(tmp_path / "m", other)
    assert same_weights(load_flow(tmp_path / "m"), other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_hugging_face_cache_layout(tmp_path, net):
    """models--owner--name/{blobs, snapshots/<rev>/ -> symlinks, refs/main}, as huggingface_hub writes it."""
    plain = save_model_dir(tmp_path / "plain", net)
    root = tmp_path / "hub" / "models--nicolas-dufour--PLONK_TINY"
    rev = "0123abcd" * 5
    (root / "blobs").mkdir(parents=True)
    (root / "snapshots" / rev).mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(rev)
    for name in ("config.json", "model.safetensors"):
        blob = root / "blobs" / checkpoint.file_sha256(plain / name)
        blob.write_bytes((plain / name).read_bytes())
        os.symlink(os.path.relpath(blob, root / "snapshots" / rev), root / "snapshots" / rev / name)
    assert checkpoint.resolve_model_dir(root) == root / "snapshots" / rev
    assert same_weights(load_flow(root), net)
    assert same_weights(load_flow(root / "snapshots" / rev), net)


def test_missing_or_wrong_folders_say_how_to_get_a_model(tmp_path, net):
    with pytest.raises(ModelNotFoundError, match="does not exist") as err:
        load_flow(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and "geoplonk models pull" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="expected config.json"):
        load_flow(tmp_path / "empty")
    out = save_model_dir(tmp_path / "m", net)
    (out / "config.json").write_text(json.dumps({**SMALL.to_dict(), "depth": 3}))
    with pytest.raises(ModelNotFoundError, match="do not match"):
        load_flow(out)
    (out / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelNotFoundError, match="cannot be read"):
        load_flow(out)


def test_verify_reports_changed_missing_and_extra_files(tmp_path, net):
    out = save_model_dir(tmp_path / "m", net, extra_files={"encoder/weights.bin": __file__})
    assert "encoder/weights.bin" in checkpoint.read_manifest(out)["files"]
    assert verify_files(out) == []
    (out / "encoder" / "weights.bin").write_bytes(b"tampered")
    (out / "extra.txt").write_text("x")
    problems = verify_files(out)
    assert any(p.startswith("changed: encoder/weights.bin") for p in problems)
    assert "not in manifest: extra.txt" in problems
    (out / "encoder" / "weights.bin").unlink()
    assert "missing: encoder/weights.bin" in verify_files(out)


def test_calibrated_guidance_is_read_from_the_manifest_and_checked(tmp_path, net):
    from model_server.engine.model import clear_cache, load_model

    def model_with(calibration):
        clear_cache()
        manifest = {"name": "tiny", "encoder": "efficientnet-lite0"}
        if calibration is not None:
            manifest["calibration"] = calibration
        return load_model(save_model_dir(tmp_path / "m", net, manifest))

    assert model_with(None).distribution_cfg == 0.0  # as trained, like a published checkpoint
    assert model_with({"distribution_cfg": -0.075}).distribution_cfg == -0.075
    for bad in (None, "wide", 50, True):
        with pytest.raises(ValueError, match="distribution_cfg must be a number in"):
            model_with({"distribution_cfg": bad}).distribution_cfg  # noqa: B018 - the property raises
    clear_cache()


def test_a_land_rule_in_the_manifest_gives_land_looking_photos_their_own_guidance(tmp_path, net):
    from model_server.engine.guidance import Guidance
    from model_server.engine.model import clear_cache, load_model

    def model_with(calibration):
        clear_cache()
        return load_model(save_model_dir(tmp_path / "m", net, {"name": "tiny", "encoder": "efficientnet-lite0",
                                                                "calibration": calibration}))

    model = model_with({"distribution_cfg": -0.1, "land_cfg": -0.2, "land_share_threshold": 0.4})
    assert model.guidance == Guidance(-0.1, -0.2, 0.4) and model.distribution_cfg == -0.1
    assert [model.guidance.for_land_share(s) for s in (0.0, 0.39, 0.4, 1.0)] == [-0.1, -0.1, -0.2, -0.2]
    with pytest.raises(ValueError, match="land share"):
        model.guidance.for_land_share(None)  # a rule needs the photo's share
    assert model_with({"distribution_cfg": -0.1}).guidance.for_land_share(None) == -0.1  # one w needs none
    assert "-0.2 land-looking, -0.1 others" in model.guidance.describe()
    for bad, message in (({"land_cfg": "wide"}, "land_cfg must be a number"),
                         ({"land_cfg": None}, "land_cfg must be a number"),
                         ({"land_cfg": -0.2, "land_share_threshold": 0}, "land_share_threshold must be"),
                         ({"land_cfg": -0.2, "land_share_threshold": 1.5}, "land_share_threshold must be")):
        with pytest.raises(ValueError, match=message):
            model_with({"distribution_cfg": -0.1, **bad}).guidance  # noqa: B018 - the property raises
    clear_cache()
