"""A small real model and one real `geoplonk serve` process shared by the server tests."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geoplonk_service.launcher import start_local_server
from model_server.engine.checkpoint import save_model_dir
from model_server.engine.network import FlowConfig, GeoAdaLNMLP
from model_server.images import exif_with_gps

REPO = Path(__file__).resolve().parents[2]
# Small, quick options for every request the tests send (the 2-core machine is shared).
FAST = {"samples": 128, "steps": 4, "resolution": 2.0, "top_k": 3}
TINY_CALIBRATED_CFG = -0.25


def server_command(*extra: str) -> str:
    return " ".join([sys.executable, "-m", "model_server.cli", "serve", *extra])


def server_env() -> dict[str, str]:
    return {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}


def make_tiny_model(path: Path) -> Path:
    """A GeoAdaLNMLP (dim 32, depth 2) on EfficientNet-Lite0 features, in the published folder format."""
    torch.manual_seed(0)
    net = GeoAdaLNMLP(FlowConfig(cond_dim=1280, depth=2, dim=32))
    with torch.no_grad():  # non-zero output layers so that the flow actually moves points
        for block in net.blocks:
            block.mlp[3].weight.normal_(0, 0.05)
    # calibrated like the default model (geoplonk calibrate): requests without a cfg draw at this guidance
    manifest = {"name": "tiny-test", "encoder": {"name": "efficientnet-lite0"},
                "calibration": {"distribution_cfg": TINY_CALIBRATED_CFG}}
    return save_model_dir(path, net, manifest)


def jpeg_bytes(seed: int, gps: tuple[float, float] | None = None, size=(160, 120)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    exif = exif_with_gps(*gps) if gps else Image.Exif()
    Image.fromarray(pixels).save(out, "JPEG", exif=exif)
    return out.getvalue()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-test")


@pytest.fixture(scope="session")
def server(tiny_model):
    srv = start_local_server(
        server_command("--model", str(tiny_model), "--batch-size", "2"),
        parent_pid=os.getpid(),
        idle_timeout=600,
        ready_timeout=120,
        env=server_env(),
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def endpoint(server) -> str:
    return server.endpoint
