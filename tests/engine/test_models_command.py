"""`geoplonk models`: pack -> unpack -> verify round trip, tamper detection, inspect, list, offline pull."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from model_server.engine.checkpoint import load_flow, save_model_dir
from model_server.engine.network import FlowConfig, GeoAdaLNMLP

from .test_checkpoint import same_weights
from .test_oracle import randomise

ROOT = Path(__file__).resolve().parents[2]


def geoplonk(*args, home: Path, offline: bool = True) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(home),
           "GEOPLONK_MODELS": str(home / "models"), "HF_HUB_CACHE": str(home / "hub")}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "model_server.cli", "models", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


@pytest.fixture
def published(tmp_path):
    """A folder like the hub's PLONK_YFCC: config.json + model.safetensors, no manifest; plus an encoder folder."""
    net = GeoAdaLNMLP(FlowConfig(cond_dim=16, dim=32, depth=2))
    randomise(net, 0)
    folder = save_model_dir(tmp_path / "PLONK_YFCC", net.eval())
    (folder / "geoplonk.json").unlink()
    enc = tmp_path / "dinov2"
    enc.mkdir()
    (enc / "config.json").write_text("{}")
    (enc / "model.safetensors").write_bytes(b"\0" * 100)
    return folder, enc, net


def test_pack_unpack_verify_round_trip(tmp_path, published):
    folder, enc, net = published
    r = geoplonk("pack", folder, tmp_path / "b.tar", "--encoder-dir", enc, "--licence", "MIT",
                 "--trained-on", "YFCC100M", home=tmp_path)
    assert r.returncode == 0, r.stderr
    r = geoplonk("unpack", tmp_path / "b.tar", home=tmp_path)
    assert r.returncode == 0, r.stderr
    target = tmp_path / "models" / "PLONK_YFCC"
    manifest = json.loads((target / "geoplonk.json").read_text())
    assert manifest["encoder"] == {"name": "dinov2-reg", "path": "encoder"}
    assert manifest["licence"] == "MIT" and manifest["trained_on"] == "YFCC100M"
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "encoder/config.json",
                                      "encoder/model.safetensors"}
    assert same_weights(load_flow(target), net)
    assert geoplonk("verify", target, home=tmp_path).returncode == 0
    info = json.loads(geoplonk("inspect", target, home=tmp_path).stdout)
    assert info["config"]["dim"] == 32 and info["state_dict_entries"] == 4 + 2 + 2 + 2 * 6 + 2 + 2 + 1
    listed = geoplonk("list", home=tmp_path).stdout
    assert "PLONK_YFCC" in listed and "dinov2-reg" in listed
    # unpacking again refuses to overwrite without --force
    r = geoplonk("unpack", tmp_path / "b.tar", home=tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr
    assert geoplonk("unpack", tmp_path / "b.tar", "--force", home=tmp_path).returncode == 0


def test_verify_detects_tampering(tmp_path, published):
    folder, enc, _ = published
    assert geoplonk("pack", folder, tmp_path / "b.tar", home=tmp_path).returncode == 0
    assert geoplonk("unpack", tmp_path / "b.tar", "--to", tmp_path / "x", home=tmp_path).returncode == 0
    weights = tmp_path / "x" / "PLONK_YFCC" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    r = geoplonk("verify", tmp_path / "x" / "PLONK_YFCC", home=tmp_path)
    assert r.returncode == 1 and "changed: model.safetensors" in r.stdout


def test_unpack_refuses_unsafe_or_corrupt_bundles(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("m/../../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    r = geoplonk("unpack", evil, "--to", tmp_path / "x", home=tmp_path)
    assert r.returncode == 2 and "refusing" in r.stderr and not (tmp_path / "escape.txt").exists()


def test_pull_refuses_when_offline(tmp_path):
    r = geoplonk("pull", "nicolas-dufour/PLONK_YFCC", home=tmp_path, offline=True)
    assert r.returncode == 2 and "HF_HUB_OFFLINE" in r.stderr


@pytest.mark.parametrize(
    ("encoder", "names"),
    [
        # every tile, trained on or located, as the mean of its quarter turns
        ({"name": "efficientnet-lite0+rot4"}, ("efficientnet-lite0+rot4", "efficientnet-lite0+rot4")),
        # the default model: trained on quarter-turn means, located as the mean of eight views
        # (`train --encoder efficientnet-lite0+rot4 --query-views d8`)
        ({"name": "efficientnet-lite0+rot4", "views": "d8"}, ("efficientnet-lite0+d8", "efficientnet-lite0+rot4")),
        # trained on one view per photo, located as the mean of the quarter turns (`train --query-views rot4`)
        ({"name": "efficientnet-lite0", "views": "rot4"}, ("efficientnet-lite0+rot4", "efficientnet-lite0")),
    ],
)
def test_pack_keeps_the_encoder_and_its_views(tmp_path, encoder, names):
    """A bundle carries how photos are embedded: the query encoder, and the training encoder (the retrieval
    gallery of `geoplonk eval`)."""
    import shutil

    from model_server.engine.model import load_model

    model_dir = tmp_path / "earth-tiles"
    shutil.copytree(ROOT / "model_server" / "models" / "earth-tiles", model_dir)
    manifest_path = model_dir / "geoplonk.json"
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "encoder": encoder}))
    assert geoplonk("pack", model_dir, tmp_path / "b.tar", home=tmp_path).returncode == 0
    assert geoplonk("unpack", tmp_path / "b.tar", "--to", tmp_path / "x", home=tmp_path).returncode == 0
    manifest = json.loads((tmp_path / "x" / "earth-tiles" / "geoplonk.json").read_text())
    assert manifest["encoder"] == encoder
    model = load_model(tmp_path / "x" / "earth-tiles")
    assert (model.encoder_name, model.training_encoder_name) == names
