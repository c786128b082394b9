"""`geoplonk sample` and `geoplonk density` run as real subprocesses on a small model directory."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_server.engine.checkpoint import save_model_dir
from model_server.engine.likelihood import log_density
from model_server.engine.network import FlowConfig, GeoAdaLNMLP
from model_server.engine.sampling import sample
from model_server.engine.sphere import degrees_to_xyz, xyz_to_degrees

from .test_oracle import randomise

ROOT = Path(__file__).resolve().parents[2]


def geoplonk(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "model_server.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    net = GeoAdaLNMLP(FlowConfig(cond_dim=1280, dim=32, depth=2))
    randomise(net, 0)
    out = tmp_path_factory.mktemp("models") / "tiny"
    save_model_dir(out, net.eval(), {"name": "tiny", "encoder": {"name": "efficientnet-lite0"}})
    return out


@pytest.fixture(scope="module")
def net(model_dir):
    from model_server.engine.checkpoint import load_flow

    return load_flow(model_dir)


def test_sample_from_embedding_with_initial_noise_is_reproducible(tmp_path, model_dir, net):
    emb = np.random.default_rng(0).normal(size=(1, 1280)).astype(np.float32)
    np.save(tmp_path / "e.npy", emb)
    x0 = torch.nn.functional.normalize(torch.randn(50, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    np.save(tmp_path / "x0.npy", x0.numpy())
    r = geoplonk("sample", "--model", model_dir, "--embedding", tmp_path / "e.npy", "--initial-noise",
                 tmp_path / "x0.npy", "--cfg", "2", "--steps", "16", "--out", tmp_path / "s.npy")
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "s.npy")
    assert got.shape == (50, 2) and np.all(np.abs(got[:, 0]) <= 90) and np.all(np.abs(got[:, 1]) <= 180)
    expected = xyz_to_degrees(sample(net, torch.from_numpy(emb), 50, steps=16, cfg=2.0, x0=x0)[0].double())
    assert np.allclose(got, expected.numpy(), atol=1e-4)
    seeded = [geoplonk("sample", "--model", model_dir, "--embedding", tmp_path / "e.npy", "--n", "20", "--seed", "7",
                       "--out", tmp_path / f"seed{i}.npy") for i in range(2)]
    assert all(s.returncode == 0 for s in seeded)
    assert np.array_equal(np.load(tmp_path / "seed0.npy"), np.load(tmp_path / "seed1.npy"))


def test_sample_from_a_photo(tmp_path, model_dir):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(tmp_path / "p.jpg")
    r = geoplonk("sample", "--model", model_dir, "--image", tmp_path / "p.jpg", "--n", "8", "--out", tmp_path / "o.npy")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "o.npy").shape == (8, 2)


def test_density_matches_the_engine(tmp_path, model_dir, net):
    emb = np.random.default_rng(2).normal(size=1280).astype(np.float32)
    np.save(tmp_path / "e.npy", emb)
    pts = np.array([[0.0, 0.0], [45.0, 90.0], [-89.9, 179.9], [12.5, -60.0]])
    np.save(tmp_path / "p.npy", pts)
    r = geoplonk("density", "--model", model_dir, "--embedding", tmp_path / "e.npy", "--points", tmp_path / "p.npy",
                 "--method", "rk4", "--steps", "16", "--out", tmp_path / "d.npy")
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "d.npy")
    xyz = degrees_to_xyz(torch.from_numpy(pts)).float()
    expected = log_density(net, torch.from_numpy(emb), xyz, method="rk4", steps=16)[0]
    assert got.shape == (4,) and np.allclose(got, expected.numpy(), atol=1e-5)
    assert not np.allclose(got, -math.log(4 * math.pi), atol=1e-2)


def test_clear_errors(tmp_path, model_dir):
    np.save(tmp_path / "bad.npy", np.zeros((2, 7), dtype=np.float32))
    r = geoplonk("sample", "--model", model_dir, "--embedding", tmp_path / "bad.npy", "--out", tmp_path / "o.npy")
    assert r.returncode == 2 and "expects (1280,)" in r.stderr
    r = geoplonk("sample", "--model", tmp_path / "missing", "--embedding", tmp_path / "bad.npy", "--out", "o.npy")
    assert r.returncode == 2 and "missing" in r.stderr and "geoplonk models" in r.stderr
    np.save(tmp_path / "e.npy", np.zeros(1280, dtype=np.float32))
    np.save(tmp_path / "p.npy", np.array([[200.0, 10.0]]))
    r = geoplonk("density", "--model", model_dir, "--embedding", tmp_path / "e.npy", "--points", tmp_path / "p.npy",
                 "--out", tmp_path / "d.npy")
    assert r.returncode == 2 and "latitudes" in r.stderr
    r = geoplonk("density", "--model", model_dir, "--embedding", tmp_path / "e.npy", "--points", tmp_path / "nope.npy",
                 "--out", tmp_path / "d.npy")
    assert r.returncode == 2 and "not found" in r.stderr
    # map settings are refused before the long flow evaluation, naming the option
    r = geoplonk("eval", "--model", model_dir, "--data", tmp_path / "none.csv", "--map-samples", "64",
                 "--map-resolution", "0.7")
    assert r.returncode == 2 and "does not divide 180" in r.stderr
    r = geoplonk("eval", "--model", model_dir, "--data", tmp_path / "none.csv", "--map-samples", "4")
    assert r.returncode == 2 and "--map-samples" in r.stderr
    r = geoplonk("eval", "--model", model_dir, "--data", tmp_path / "none.csv", "--distribution-cfg", "-2")
    assert r.returncode == 2 and "--distribution-cfg" in r.stderr
    r = geoplonk("eval", "--model", model_dir, "--data", tmp_path / "none.csv", "--truth-tolerance", "-1")
    assert r.returncode == 2 and "--truth-tolerance must be 0 (off) or a small positive tolerance" in r.stderr
    # calibrate writes into a model folder: it names a missing one, and refuses guidance outside [-1, 0]
    r = geoplonk("calibrate", "--model", tmp_path / "no-model", "--data", tmp_path / "none.csv")
    assert r.returncode == 2 and "model folder not found" in r.stderr
    r = geoplonk("calibrate", "--model", model_dir, "--data", tmp_path / "none.csv", "--grid", "0,0.5")
    assert r.returncode == 2 and "[-1, 0]" in r.stderr
    r = geoplonk("calibrate", "--model", model_dir, "--data", tmp_path / "none.csv", "--truth-tolerance", "2")
    assert r.returncode == 2 and "--truth-tolerance must be 0 (off)" in r.stderr
    r = geoplonk("calibrate", "--model", model_dir, "--data", tmp_path / "none.csv", "--samples", "1")
    assert r.returncode == 2 and "--samples" in r.stderr
    r = geoplonk("calibrate", "--model", model_dir, "--data", tmp_path / "none.csv", "--criterion", "map",
                 "--map-resolution", "0.7")
    assert r.returncode == 2 and "--map-resolution" in r.stderr and "does not divide 180" in r.stderr
    r = geoplonk("calibrate", "--model", model_dir, "--data", tmp_path / "none.csv", "--criterion", "map",
                 "--map-samples", "8")
    assert r.returncode == 2 and "--map-samples" in r.stderr


def test_a_published_folder_of_any_name_needs_no_encoder_for_embeddings(tmp_path, model_dir, net):
    """config.json + model.safetensors under a name that names no hub model loads with --embedding and no
    manifest; only --image needs to know the encoder."""
    import shutil

    published = tmp_path / "my-checkpoint"
    published.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(model_dir / name, published / name)
    emb = np.random.default_rng(3).normal(size=(1, 1280)).astype(np.float32)
    np.save(tmp_path / "e.npy", emb)
    r = geoplonk("sample", "--model", published, "--embedding", tmp_path / "e.npy", "--n", "20", "--seed", "1",
                 "--out", tmp_path / "s.npy")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "s.npy").shape == (20, 2)
    np.save(tmp_path / "p.npy", np.array([[48.85, 2.35], [-33.9, 151.2]]))
    r = geoplonk("density", "--model", published, "--embedding", tmp_path / "e.npy", "--points", tmp_path / "p.npy",
                 "--out", tmp_path / "d.npy")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "d.npy").shape == (2,)
    # a photo still needs the encoder, and the error says how to name it
    Image.new("RGB", (64, 48)).save(tmp_path / "a.jpg")
    r = geoplonk("sample", "--model", published, "--image", tmp_path / "a.jpg", "--out", tmp_path / "t.npy")
    assert r.returncode == 2 and "names no encoder" in r.stderr and "geoplonk.json" in r.stderr
