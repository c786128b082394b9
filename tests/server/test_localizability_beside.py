"""The photo's localizability runs on the side thread while its products are made, and never outlives the photo."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from geoplonk_service import protocol as P
from model_server.engine.checkpoint import save_model_dir
from model_server.engine.model import clear_cache, load_model
from model_server.engine.network import FlowConfig, GeoAdaLNMLP
from model_server.server import pipeline

from .conftest import FAST, jpeg_bytes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    clear_cache()
    torch.manual_seed(0)
    net = GeoAdaLNMLP(FlowConfig(cond_dim=1280, depth=2, dim=32))
    folder = save_model_dir(tmp_path_factory.mktemp("beside") / "tiny", net,
                            {"name": "tiny-beside", "encoder": "efficientnet-lite0"})
    yield load_model(str(folder))
    clear_cache()


def run(model, photos: int, is_cancelled=lambda: False) -> list[tuple]:
    results = []

    def emit(kind, *args):
        if kind == "result":
            results.append(args)

    names = [f"p{i}.jpg" for i in range(photos)]
    pipeline.run_unit(model, "cpu", names, [jpeg_bytes(11 + i) for i in range(photos)], list(range(photos)),
                      P.validate_options(FAST), emit, is_cancelled)
    return results


def test_the_localizability_runs_while_the_products_are_made(tiny_model, monkeypatch):
    products_started = threading.Event()
    seen = {}
    real_localizability, real_products = pipeline.localizability, pipeline.compute_products

    def localizability(*args, **kwargs):
        # Run one after the other, this would wait for products that only start once it returns.
        seen["overlapped"] = products_started.wait(timeout=20)
        seen["thread"] = threading.current_thread().name
        return real_localizability(*args, **kwargs)

    def compute_products(*args, **kwargs):
        products_started.set()
        return real_products(*args, **kwargs)

    monkeypatch.setattr(pipeline, "localizability", localizability)
    monkeypatch.setattr(pipeline, "compute_products", compute_products)
    ((index, status, summary, error, blobs),) = run(tiny_model, 1)
    assert status == P.STATUS_OK, error
    assert seen == {"overlapped": True, "thread": "geoplonk-side-0"}
    timings = summary["timings"]
    assert timings["localizability"] > 0 and 0 <= timings["localizability_wait"] <= timings["localizability"]
    assert -0.3 < summary["localizability"] < 10 and "exact" in summary["localizability_method"]


def test_a_photo_whose_products_fail_stops_its_localizability_and_the_next_photo_goes_on(tiny_model, monkeypatch):
    events = []
    started = threading.Event()
    real_localizability, real_products = pipeline.localizability, pipeline.compute_products

    def localizability(model, emb, samples, check, cfg=0.0):
        if not events:  # the first photo's: runs until it is told to stop
            events.append("localizability started")
            started.set()
            deadline = time.monotonic() + 20
            try:
                while time.monotonic() < deadline:
                    check()
                    time.sleep(0.005)
            except pipeline.Cancelled:
                events.append("localizability stopped")
                raise
        return real_localizability(model, emb, samples, check, cfg=cfg)

    def compute_products(*args, **kwargs):
        if "products failed" not in events:
            assert started.wait(timeout=10)
            events.append("products failed")
            raise RuntimeError("no raster today")
        return real_products(*args, **kwargs)

    monkeypatch.setattr(pipeline, "localizability", localizability)
    monkeypatch.setattr(pipeline, "compute_products", compute_products)
    start = time.monotonic()
    results = run(tiny_model, 2)
    assert time.monotonic() - start < 15, "the failed photo waited for its localizability to run out"
    assert events == ["localizability started", "products failed", "localizability stopped"]
    (first, second) = results
    assert first[1] == P.STATUS_FAILED and first[3]["code"] == P.E_INTERNAL
    assert "no raster today" in first[3]["message"]
    assert second[1] == P.STATUS_OK, second[3]


def test_a_cancel_during_the_products_stops_both(tiny_model, monkeypatch):
    cancelled = threading.Event()
    stopped = []
    real_products = pipeline.compute_products

    def localizability(model, emb, samples, check, cfg=0.0):
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                check()
                time.sleep(0.005)
        except pipeline.Cancelled:
            stopped.append(True)
            raise
        raise AssertionError("never cancelled: the products did not run beside it")

    def compute_products(*args, **kwargs):
        cancelled.set()  # the client cancels while the raster is made
        return real_products(*args, **kwargs)

    monkeypatch.setattr(pipeline, "localizability", localizability)
    monkeypatch.setattr(pipeline, "compute_products", compute_products)
    results = run(tiny_model, 2, is_cancelled=cancelled.is_set)
    assert [r[1] for r in results] == [P.STATUS_CANCELLED, P.STATUS_CANCELLED]
    assert stopped == [True]
