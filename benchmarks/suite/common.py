"""Paths, sizes and the helpers every part shares (timing with a warm-up, medians, distances on the sphere)."""

from __future__ import annotations

import math
import statistics
import time
import traceback
from dataclasses import dataclass

from . import REPO

BENCHMARK = "bench_all"
DEFAULT_MODEL = REPO / "model_server" / "models" / "earth-tiles"
PHOTO = REPO / "samples" / "nile_delta.jpg"
EARTH_KM = 6371.0088
# The two models every part runs where it can: names used as keys in the record.
PLONK = "plonk-size"
DEFAULT = "default model"
LABELS = {PLONK: "PLONK size", DEFAULT: "default model"}

# The parts, in order: key -> heading.
PARTS = {
    "roofline": "1. Matmul roofline",
    "sampling": "2. Sampling at the PLONK size",
    "accuracy": "3. Accuracy against cost",
    "density": "4. Exact log-density",
    "one_photo": "5. One photo through a warm server",
    "batch": "6. A batch of photos through the server",
    "scaling": "7. How the time grows",
}


@dataclass(frozen=True)
class Sizes:
    """Every size and repeat count of a run; QUICK shrinks them all."""

    repeats: int = 3  # engine figures: runs after a warm-up (their median)
    roofline_size: int = 4096
    roofline_repeats: int = 5
    samples: int = 1024  # samples per photo in the engine parts
    steps: int = 32
    accuracy_samples: int = 128  # start points whose endpoints are compared with the converged ones
    converged_steps: int = 256
    step_grid: tuple[int, ...] = (4, 8, 16, 32)  # every solver at these step counts
    euler_extra: tuple[int, ...] = (64,)  # and Euler at these
    reference_steps: tuple[int, ...] = (32, 250)  # the reference's Euler: the server's 32, the authors' 250
    density_points: int = 64
    localizability_points: int | None = None  # None: as many as the server takes (pipeline.LOCALIZABILITY_SAMPLES)
    server_options: tuple[tuple[str, object], ...] = ()  # sent with every request (none: the server's defaults)
    server_repeats: int = 3
    batch_photos: int = 32
    batch_repeats: int = 2
    scaling_samples: tuple[int, ...] = (256, 1024, 4096)
    scaling_photos: tuple[int, ...] = (1, 8, 32)
    scaling_resolutions: tuple[float, ...] = (1.0, 0.5, 0.25)
    scaling_repeats: int = 2
    vit_layers: int = 24  # the ViT-L/14 encoder's depth (StreetCLIP's: 24)


QUICK = Sizes(
    repeats=1, roofline_size=1024, roofline_repeats=3, samples=128, steps=4, accuracy_samples=16,
    converged_steps=16, step_grid=(2, 4), euler_extra=(), reference_steps=(4, 8), density_points=4,
    localizability_points=4,
    server_options=(("samples", 128), ("steps", 4), ("resolution", 1.0)), server_repeats=1,
    batch_photos=3, batch_repeats=1, scaling_samples=(64, 128), scaling_photos=(1, 3),
    scaling_resolutions=(2.0, 1.0), scaling_repeats=1, vit_layers=1,
)


def log(text: str) -> None:
    print(text, flush=True)


def attempt(raw: dict, failures: list, part: str, label: str, func):
    """func()'s result, or None when it raises: then printed and listed in failures, so the other parts still run.
    Its wall time is added to raw["wall_s"][part]."""
    log(f"\n[{PARTS[part]}{label}]")
    start = time.perf_counter()
    try:
        return func()
    except Exception as exc:  # noqa: BLE001 - one part's failure is recorded; the others still run
        traceback.print_exc()
        failures.append(f"{PARTS[part]}{label}: {type(exc).__name__}: {exc}")
        return None
    finally:
        seconds = time.perf_counter() - start
        wall = raw.setdefault("wall_s", {})
        wall[part] = wall.get(part, 0.0) + seconds
        log(f"  ({seconds:.0f} s)")


def sync(device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that a timer sees all of it."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(func, repeats: int, device, warmup=None) -> list[float]:
    """Seconds of `repeats` calls of func, after one warm-up call of `warmup` (default: func; False: none)."""
    if warmup is not False:
        (warmup or func)()
        sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        func()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def median(values) -> float:
    return float(statistics.median(values))


def sig(value: float, digits: int = 3) -> float:
    """value rounded to `digits` significant digits."""
    if value == 0 or not math.isfinite(value):
        return value
    places = digits - 1 - int(math.floor(math.log10(abs(value))))
    return round(value, places) if places > 0 else int(round(value, places))


def distance_km(a, b):
    """Great-circle distances (km) between unit vectors a and b (..., 3), exact for tiny angles too."""
    import torch

    chord = (a.double() - b.double()).norm(dim=-1).clamp(max=2.0)
    return (2 * torch.asin(chord / 2) * EARTH_KM).cpu()


def percentile(values, q: float) -> float:
    import torch

    return float(torch.quantile(torch.as_tensor(values, dtype=torch.float64), q))
