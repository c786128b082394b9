"""Flow matching training on synthetic data: each embedding is tied to a mixture of von Mises-Fisher
clusters on the sphere; a short run must recover the clusters and beat uniform in held-out NLL."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from model_server.engine.likelihood import log_density
from model_server.engine.network import FlowConfig, GeoAdaLNMLP
from model_server.engine.sampling import sample
from model_server.engine.schedule import gamma
from model_server.engine.sphere import geodesic_distance, uniform_sphere
from model_server.engine.training import (
    ema_update,
    fold_input_map,
    geodesic_target,
    input_map,
    jitter_targets,
    lr_factor,
    train_flow,
)
from model_server.evaluation.metrics import UNIFORM_NLL
from model_server.geodesy import EARTH_RADIUS_KM

from .geodesics import geodesic_interpolant, log_map

KAPPA = 300.0  # ~ 370 km spread
COND_DIM = 16


def sample_vmf(mu: np.ndarray, kappa: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Exact vMF draws on S^2 (the inverse-CDF of the cosine), around unit vector mu."""
    u = rng.uniform(size=n)
    w = 1 + np.log(u + (1 - u) * np.exp(-2 * kappa)) / kappa
    v = rng.normal(size=(n, 3))
    v -= (v @ mu)[:, None] * mu
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return w[:, None] * mu + np.sqrt(np.clip(1 - w**2, 0, None))[:, None] * v


def make_problem(rng: np.random.Generator):
    """3 'images', each with 2 cluster centres; embeddings are fixed random vectors (plus a little noise)."""
    centres = rng.normal(size=(3, 2, 3))
    centres /= np.linalg.norm(centres, axis=-1, keepdims=True)
    codes = rng.normal(size=(3, COND_DIM)) * 2 + 1

    def draw(n_per: int):
        emb, pts, owner = [], [], []
        for i in range(3):
            which = rng.integers(0, 2, n_per)
            for k in range(2):
                m = int((which == k).sum())
                pts.append(sample_vmf(centres[i, k], KAPPA, m, rng))
                emb.append(codes[i] + 0.05 * rng.normal(size=(m, COND_DIM)))
                owner += [i] * m
        return np.concatenate(emb), np.concatenate(pts), np.asarray(owner)

    return centres, codes, draw


def test_geodesic_target_matches_log_map_quotient():
    gen = torch.Generator().manual_seed(1)
    x0, x1 = uniform_sphere(64, gen), uniform_sphere(64, gen)
    g = torch.rand(64, 1, generator=gen) * 0.9
    xg, u = geodesic_target(x0, x1, g)
    assert torch.allclose(xg, geodesic_interpolant(x0, x1, g), atol=1e-5)
    assert torch.allclose(u, log_map(xg, x1) / (1 - g), atol=1e-4)


def test_ema_is_the_correct_direction():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        a.weight.fill_(0.0)
        b.weight.fill_(1.0)
    ema_update(a, b, decay=0.9)
    assert torch.allclose(a.weight, torch.full((2, 2), 0.1))


def test_lr_schedule_warms_up_and_decays_to_zero():
    assert lr_factor(0, 10, 100) == 0.1
    assert lr_factor(9, 10, 100) == 1.0
    assert abs(lr_factor(100, 10, 100)) < 1e-12


@pytest.mark.parametrize("rank", [0, 3])
def test_folding_the_input_map_is_exact_and_keeps_zero_unconditional(rank):
    torch.manual_seed(0)
    emb = torch.randn(50, 8) * torch.linspace(0.5, 4, 8) + 5
    m, m0 = input_map(emb, rank)
    small = GeoAdaLNMLP(FlowConfig(cond_dim=m.shape[0], dim=32, depth=2))
    x, g = uniform_sphere(50), torch.rand(50)
    before = small(x, g, emb @ m.T + m0)
    before_zero = small(x, g, m0.expand(50, -1))
    full = fold_input_map(small, m, m0, FlowConfig(cond_dim=8, dim=32, depth=2))
    assert full.cond_mapper.weight.shape == (32, 8)
    assert torch.allclose(full(x, g, emb), before, atol=1e-5)
    assert torch.allclose(full(x, g, torch.zeros(50, 8)), before_zero, atol=1e-5)


def test_low_rank_input_map_whitens_the_top_components():
    torch.manual_seed(0)
    emb = torch.randn(400, 16) @ torch.randn(16, 16) + 3
    m, m0 = input_map(emb, 4)
    z = emb @ m.T + m0
    assert z.shape == (400, 4)
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(4), atol=1e-3)
    assert torch.allclose(torch.corrcoef(z.T), torch.eye(4), atol=1e-4)


def test_target_jitter_moves_points_by_the_asked_distance():
    x = uniform_sphere(20000, generator=torch.Generator().manual_seed(0))
    y = jitter_targets(x, 100.0, torch.Generator().manual_seed(1))
    d = geodesic_distance(x, y) * EARTH_RADIUS_KM
    # a 2-d Gaussian step with std s per axis has mean length s * sqrt(pi / 2)
    assert abs(float(d.mean()) - 100.0 * math.sqrt(math.pi / 2)) < 2.0
    assert torch.allclose(y.norm(dim=-1), torch.ones(20000), atol=1e-5)
    assert torch.equal(jitter_targets(x, 0.0), x)


def test_training_recovers_vmf_clusters():
    rng = np.random.default_rng(0)
    centres, codes, draw = make_problem(rng)
    emb, pts, _ = draw(1000)
    torch.set_num_threads(1)
    net = train_flow(torch.tensor(emb, dtype=torch.float32), torch.tensor(pts, dtype=torch.float32),
                     FlowConfig(cond_dim=COND_DIM, dim=64, depth=3), steps=800, batch_size=256, lr=3e-3,
                     warmup=50, ema_decay=0.99, seed=0)
    codes_t = torch.tensor(codes, dtype=torch.float32)

    # samples land on their own image's clusters
    x = sample(net, codes_t, 200, steps=32, generator=torch.Generator().manual_seed(0))  # (3, 200, 3)
    c = torch.tensor(centres, dtype=torch.float32)  # (3, 2, 3)
    d = geodesic_distance(x.unsqueeze(2), c.unsqueeze(1)).min(dim=-1).values * EARTH_RADIUS_KM
    median_km = float(d.median())
    # uniform points: median distance to the nearer of two centres is ~ 4,000 km
    print(f"synthetic: median distance of samples to the nearest true centre {median_km:.0f} km")
    assert median_km < 900

    # both modes of every image are visited
    nearest = geodesic_distance(x.unsqueeze(2), c.unsqueeze(1)).argmin(dim=-1)
    share = nearest.float().mean(dim=1)
    assert bool(((share > 0.2) & (share < 0.8)).all()), share

    # held-out NLL (exact likelihood, nats per steradian) beats uniform by a clear margin
    emb_te, pts_te, owner = draw(20)
    logp = log_density(net, codes_t, torch.stack([torch.tensor(pts_te[owner == i], dtype=torch.float32)
                                                  for i in range(3)]), method="rk4", steps=16)
    nll = float(-logp.mean())
    ideal = -(math.log(KAPPA / (2 * math.pi)) - 1 - math.log(2))  # mixture-of-two vMF entropy, roughly
    print(f"synthetic: held-out NLL {nll:.2f} nats/sr (uniform {UNIFORM_NLL:.2f}, ideal about {ideal:.2f})")
    assert nll < UNIFORM_NLL - 2.0


def test_land_weight_draws_land_photos_more_often():
    """Each image's first cluster stands for land: drawn four times as often, it holds about 4/5 of the samples."""
    rng = np.random.default_rng(1)
    centres, codes, draw = make_problem(rng)
    emb, pts, owner = draw(600)
    first = np.einsum("nd,nd->n", pts, centres[owner, 0]) > np.einsum("nd,nd->n", pts, centres[owner, 1])
    args = (torch.tensor(emb, dtype=torch.float32), torch.tensor(pts, dtype=torch.float32),
            FlowConfig(cond_dim=COND_DIM, dim=64, depth=3))
    options = {"steps": 600, "batch_size": 256, "lr": 3e-3, "warmup": 50, "ema_decay": 0.99, "seed": 0}
    with pytest.raises(ValueError, match="on_land"):
        train_flow(*args, land_weight=4.0, **options)
    torch.set_num_threads(1)
    net = train_flow(*args, on_land=torch.from_numpy(first), land_weight=4.0, **options)
    x = sample(net, torch.tensor(codes, dtype=torch.float32), 300, steps=32, generator=torch.Generator().manual_seed(0))
    c = torch.tensor(centres, dtype=torch.float32)
    share = (geodesic_distance(x.unsqueeze(2), c.unsqueeze(1)).argmin(dim=-1) == 0).float().mean(dim=1)
    print(f"share of samples at the land cluster, per image: {share.tolist()} (4/5 asked, 1/2 in the data)")
    assert bool(((share > 0.68) & (share < 0.92)).all()), share


def test_gamma_is_used_as_data_at_zero():
    assert float(gamma(torch.tensor(0.0))) == 1.0


def test_train_and_eval_commands_end_to_end(tmp_path, monkeypatch, capsys):
    """`geoplonk train` writes a loadable model dir, resumes from its state, and `geoplonk eval` reports."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    import json

    from model_server.cli import main
    from model_server.data.earth_tiles import build_earth_tiles
    from model_server.engine.checkpoint import verify_files
    from model_server.engine.model import load_model

    build_earth_tiles(tmp_path / "tiles", n_train=8, n_test=3, seed=2, size=96, progress=False, n_train_land=2)
    out = tmp_path / "model"
    # two sources in one training set, as the default model's uniform and land tiles
    tiles = tmp_path / "tiles"
    common = ["train", "--data", str(tiles / "train"), "--data", str(tiles / "train-land.csv"), "--out", str(out),
              "--dim", "32", "--depth", "1",
              "--batch-size", "16", "--warmup", "2", "--state-every", "3", "--cache", str(tmp_path / "emb.npz"),
              "--weights-dtype", "fp16", "--encoder", "efficientnet-lite0+rot4", "--query-views", "d8", "--quiet",
              "--threads", "1"]
    assert main(common + ["--steps", "3"]) == 0
    state = torch.load(out.with_name("model.train-state.pt"), weights_only=False)
    assert state["step"] == 3
    assert state["training_seconds"] > 0
    torch.save({**state, "training_seconds": 1000.0}, out.with_name("model.train-state.pt"))  # a long first run
    assert main(common + ["--steps", "6", "--resume"]) == 0
    assert torch.load(out.with_name("model.train-state.pt"), weights_only=False)["step"] == 6
    assert verify_files(out) == []
    model = load_model(out)
    # the resumed run's manifest counts both runs' training time
    assert model.manifest["provenance"]["resumed_at_step"] == 3
    assert 1000.0 <= model.manifest["provenance"]["training_seconds"] < 1100.0
    assert "training_seconds_note" not in model.manifest["provenance"]
    # a state saved before the counter: the manifest says which steps its time leaves out
    legacy = tmp_path / "legacy"
    old_state = {k: v for k, v in state.items() if k not in ("training_seconds", "uncounted_steps")}
    torch.save(old_state, legacy.with_name("legacy.train-state.pt"))
    assert main([str(legacy) if a == str(out) else a for a in common] + ["--steps", "6", "--resume"]) == 0
    assert json.loads((legacy / "geoplonk.json").read_text())["provenance"]["training_seconds_note"] == (
        "the first 3 steps not counted")
    # and again after a second resume, whose state has the counter by then, as on a CPU without bf16 units: a bf16
    # request trains in fp32 there, says so, and the manifest records what ran, and what the resumed steps ran
    from model_server.engine import sampling

    legacy_state = legacy.with_name("legacy.train-state.pt")
    saved = torch.load(legacy_state, weights_only=False)
    torch.save({**saved, "train_config": {**saved["train_config"], "precision": "bf16"}}, legacy_state)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(sampling, "native_cpu_bf16", lambda: False)
        assert main([str(legacy) if a == str(out) else a for a in common] + ["--steps", "9", "--resume"]) == 0
    provenance = json.loads((legacy / "geoplonk.json").read_text())["provenance"]
    assert provenance["training_seconds_note"] == "the first 3 steps not counted"
    assert provenance["train_config"]["precision"] == "fp32"
    assert provenance["precision_note"] == "steps up to 6 trained in bf16"
    assert "bf16 is not native on this CPU: training in fp32" in capsys.readouterr().err
    assert model.manifest["provenance"]["n_images"] == 10 and model.flow.config.dim == 32
    # as the default model: trained on quarter-turn means, tiles to locate embedded as the mean of eight views
    assert model.manifest["encoder"] == {"name": "efficientnet-lite0+rot4", "views": "d8"}
    assert model.encoder_name == "efficientnet-lite0+d8" and model.training_encoder_name == "efficientnet-lite0+rot4"
    assert model.encoder.name == "efficientnet-lite0+d8"
    # calibrate on test tiles 1-2 (tile 0 stands for the report split): the manifest records the chosen w,
    # and its file hashes still verify; a dry run leaves the manifest alone
    test_csv = str(tmp_path / "tiles" / "test.csv")
    calibrate = ["calibrate", "--model", str(out), "--data", test_csv, "--skip", "1", "--grid", "0,-0.5",
                 "--likelihood-steps", "2", "--quiet", "--threads", "1"]
    before = (out / "geoplonk.json").read_text()
    assert main(calibrate + ["--dry-run"]) == 0
    assert (out / "geoplonk.json").read_text() == before
    (out / "stray.bin").write_bytes(b"not part of the model")  # the manifest's hashes must hold first
    assert main(calibrate) == 2 and "calibration" not in json.loads((out / "geoplonk.json").read_text())
    (out / "stray.bin").unlink()
    assert main(calibrate) == 0
    assert verify_files(out) == []
    calibration = json.loads((out / "geoplonk.json").read_text())["calibration"]
    assert calibration["n"] == 2 and calibration["skip"] == 1 and set(calibration["nll_by_cfg"]) == {"0", "-0.5"}
    nll = {float(k): v for k, v in calibration["nll_by_cfg"].items()}
    assert calibration["distribution_cfg"] == min(nll, key=nll.get)
    # by coverage: the credible regions' shares are recorded per w too, and again for the tiles on land
    from model_server.products.place_names import is_land

    rows = (tmp_path / "tiles" / "test.csv").read_text().splitlines()
    header, tiles = rows[0], [r.split(",") for r in rows[1:]]
    on_land = int(is_land(np.array([float(t[1]) for t in tiles[1:]]), np.array([float(t[2]) for t in tiles[1:]])).sum())

    def land_keys(*kinds):
        return {f"land_{kind}_{p}" for kind in kinds for p in (50, 90, 99)} if on_land else set()

    assert main(calibrate + ["--criterion", "coverage", "--samples", "4"]) == 0
    calibration = json.loads((out / "geoplonk.json").read_text())["calibration"]
    assert set(calibration["coverage_by_cfg"]["-0.5"]) == {"coverage_50", "coverage_90", "coverage_99",
                                                           *land_keys("coverage")}
    assert calibration.get("land_tiles", 0) == on_land
    assert calibration["samples"] == 4 and "coverage" in calibration["criterion"] and verify_files(out) == []
    # by the exact and the drawn map's regions together: the map's shares and NLL are recorded too
    assert main(calibrate + ["--criterion", "map", "--samples", "4", "--map-samples", "32",
                             "--map-resolution", "2"]) == 0
    calibration = json.loads((out / "geoplonk.json").read_text())["calibration"]
    assert set(calibration["coverage_by_cfg"]["0"]) == {"coverage_50", "coverage_90", "coverage_99", "map_nll",
                                                        "map_coverage_50", "map_coverage_90", "map_coverage_99",
                                                        *land_keys("coverage", "map_coverage")}
    assert calibration["map_samples"] == 32 and calibration["map_resolution"] == 2 and verify_files(out) == []
    # map-land scores the photos taken on land again: here tile 1 moved to Paris, tile 2 to the open Pacific
    tiles[1][1:3], tiles[2][1:3] = ["48.85", "2.35"], ["0.0", "-140.0"]
    moved = tmp_path / "tiles" / "test-moved.csv"
    moved.write_text("\n".join([header, *(",".join(t) for t in tiles)]) + "\n")
    by_land = [*calibrate, "--criterion", "map-land", "--samples", "4", "--map-samples", "32", "--map-resolution", "2",
               "--cache", str(tmp_path / "moved-emb.npz"), "--solver", "rk3", "--steps", "2"]
    by_land[by_land.index(test_csv)] = str(moved)
    assert main(by_land) == 0
    calibration = json.loads((out / "geoplonk.json").read_text())["calibration"]
    assert calibration["land_tiles"] == 1 and "map-land" in calibration["criterion"]
    assert calibration["sampler"] == "rk3, 2 steps"  # the draws w was set for, when not the server's default's
    assert {"land_coverage_50", "land_map_coverage_90"} <= set(calibration["coverage_by_cfg"]["0"])
    capsys.readouterr()
    assert main([*by_land, "--limit", "1", "--skip", "2"]) == 2  # only the Pacific tile: no land photo to score
    assert "none of the 1 photos' truths is on land" in capsys.readouterr().err
    # by land share: one w for the tiles whose guess draws fall more on land, one for the others, each chosen
    # on its own tiles (the threshold set between the two tiles' shares, as the command computes them)
    from model_server.engine.datasets import embed_dataset, read_dataset
    from model_server.evaluation.calibration import guess_land_shares

    emb, _ = embed_dataset(read_dataset(moved, progress=False).subset(np.arange(1, 3)), model.encoder,
                           cache_path=tmp_path / "moved-emb.npz", progress=False)
    shares = guess_land_shares(model.flow, emb)
    assert shares[0] != shares[1]
    by_share = [*by_land[: by_land.index("--criterion")], "--criterion", "coverage", "--samples", "4",
                "--cache", str(tmp_path / "moved-emb.npz"), "--by-land-share"]
    assert main([*by_share, "--land-share-threshold", "1.5"]) == 2
    assert "--land-share-threshold must lie in (0, 1]" in capsys.readouterr().err
    assert main([*by_share, "--land-share-threshold", str(shares.mean())]) == 0
    calibration = json.loads((out / "geoplonk.json").read_text())["calibration"]
    assert calibration["land_share_threshold"] == shares.mean() and calibration["n"] == 2
    assert calibration["likelihood"] == "rk4, 2 steps; the truths by dopri5 at 1e-05"  # the truths: the default
    assert {name: g["n"] for name, g in calibration["groups"].items()} == {"land-looking": 1, "others": 1}
    for name, key in (("land-looking", "land_cfg"), ("others", "distribution_cfg")):
        assert calibration[key] == calibration["groups"][name]["distribution_cfg"]
    assert verify_files(out) == []
    from model_server.engine.model import clear_cache

    clear_cache()
    model = load_model(out)
    assert model.distribution_cfg == calibration["distribution_cfg"]
    assert model.guidance.land == calibration["land_cfg"]
    assert main(["calibrate", "--model", str(out), "--data", test_csv, "--skip", "3", "--quiet"]) == 2  # none left
    report_path = tmp_path / "report.json"
    assert main(["eval", "--model", str(out), "--data", str(tmp_path / "tiles" / "test.csv"), "--train-data",
                 str(tmp_path / "tiles" / "train.csv"), "--train-data", str(tmp_path / "tiles" / "train-land.csv"),
                 "--samples", "8", "--guess-samples", "8", "--steps", "4",
                 "--likelihood-steps", "2", "--map-samples", "32", "--map-resolution", "2",
                 "--out", str(report_path), "--quiet", "--threads", "1"]) == 0
    report = json.loads(report_path.read_text())
    assert report["settings"]["truth_tolerance"] == 1e-5  # the truths by dopri5, the draws by rk4 in 2 steps
    assert report["model_sha256"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    # the retrieval gallery is embedded as the tiles to locate are (d8), not as the flow was trained (rot4)
    caches = sorted(p.name for p in (tmp_path / "cache" / "geoplonk" / "embeddings").glob("*.npz"))
    assert [c.split("-", 1)[0] for c in caches if c.endswith("-efficientnet-lite0+d8.npz")] == ["test", "train"], caches
    # the gallery is the flow's whole training set, both sources
    assert report["settings"]["train_data"] == [str(tmp_path / "tiles" / f) for f in ("train.csv", "train-land.csv")]
    gallery = next((tmp_path / "cache" / "geoplonk" / "embeddings").glob("train-*-efficientnet-lite0+d8.npz"))
    assert len(np.load(gallery)["keys"]) == 10
    methods = [r["method"] for r in report["rows"]]
    assert methods[0] == "uniform prior" and any(m.startswith("retrieval top-1") for m in methods)
    flow, drawn_map = report["rows"][-2:]
    # the distribution and the drawn map are the calibrated ones
    tag = model.guidance.describe()
    assert "land-looking" in tag and tag in flow["method"] and tag in drawn_map["method"]
    assert set(report["per_image"]["cfg"]) <= {model.guidance.land, model.guidance.cfg}
    assert report["settings"]["land_cfg"] == model.guidance.land
    assert flow["n"] == 3 and {"nll_mean", "coverage_50", "coverage_90", "coverage_99", "geoscore"} <= set(flow)
    # the map as the server draws it: its regions' coverage grows with the level, and it has no distance figures
    assert drawn_map["method"].startswith("flow, the server's map") and "geoscore" not in drawn_map
    assert 0 <= drawn_map["coverage_50"] <= drawn_map["coverage_90"] <= drawn_map["coverage_99"] <= 1
    assert np.isfinite(drawn_map["nll_mean"])
    assert abs(report["rows"][0]["nll_mean"] - UNIFORM_NLL) < 1e-9
    # every figure with its 95 % bootstrap interval over tiles, the rows again on land tiles, per-tile errors
    for key in ("geoscore", "acc_2500km", "median_km", "nll_mean", "coverage_50"):
        lo, hi = flow[f"{key}_ci"]
        assert lo - 1e-9 * abs(lo) <= flow[key] <= hi + 1e-9 * abs(hi), key
    assert "coverage_90_ci" in drawn_map and report["intervals"]["resamples"] == 2000
    land, per_image = report["land"], report["per_image"]
    assert len(per_image["land"]) == 3 and land["n"] == sum(per_image["land"])
    assert land["water_share"] == pytest.approx(1 - land["n"] / 3)
    assert [r["method"] for r in land["rows"]] == (methods if land["n"] else [])
    assert all(r["n"] == land["n"] for r in land["rows"])
    assert {"uniform", "retrieval_top1", "retrieval_kde", "flow_single", "flow_guess"} <= set(per_image["error_km"])
    assert per_image["error_km"]["flow_guess"] == per_image["error_km_guess"]
    # the best guess against the retrieval kernel density, paired by tile
    comparison = report["comparisons"][0]
    assert (comparison["subset"], comparison["a"], comparison["b"]) == ("all", "flow_guess", "retrieval_kde")
    lo, hi = comparison["geoscore_difference_ci"]
    assert lo <= comparison["geoscore_difference"] + 1e-9 and comparison["geoscore_difference"] <= hi + 1e-9
    assert [c["subset"] for c in report["comparisons"]] == (["all", "land"] if land["n"] else ["all"])
    # the test tiles are at sea; with the training tiles too, two are on land. Without a training set there is no
    # retrieval to compare with
    tiles = tmp_path / "tiles"
    train_rows = (tiles / "train.csv").read_text().splitlines()[1:]
    (tiles / "mixed.csv").write_text("\n".join((tiles / "test.csv").read_text().splitlines() + train_rows) + "\n")
    assert main(["eval", "--model", str(out), "--data", str(tiles / "mixed.csv"), "--samples", "8",
                 "--guess-samples", "8", "--steps", "4", "--likelihood-steps", "2", "--out", str(report_path),
                 "--quiet", "--threads", "1"]) == 0
    report = json.loads(report_path.read_text())
    land = report["land"]
    assert report["n"] == 11 and land["n"] == 2 and land["water_share"] == pytest.approx(9 / 11)
    assert [r["key"] for r in land["rows"]] == ["flow_single", "flow_guess", "flow_distribution"]
    guess = land["rows"][1]
    assert guess["n"] == 2 and {"acc_750km_ci", "acc_2500km_ci", "geoscore_ci"} <= set(guess)
    assert report["comparisons"] == []
