"""Archive throughput on this machine: `geoplonk locate` through a server against `geoplonk batch` on a local
Ray instance with 1 and 2 model actors, the per-stage costs of a photo (for docs/scale.md), and the memory of
`locate` (it must stay flat however many photos).

  .venv/server/bin/python benchmarks/bench_scale.py --photos 40                 # throughput, default model
  .venv/server/bin/python benchmarks/bench_scale.py --photos 10000 --stub --record benchmarks/results/

--stub: `geoplonk locate` writes the outputs of --photos photos answered at once by StubServer (the real
protocol, ~200 kB of blobs a photo, no model), while this script samples the locate process's VmRSS: its peak
and its growth after the first 1,000 photos, which holding the results would make about 200 kB a photo.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geoplonk_service import protocol as P  # noqa: E402


class StubServer:
    """A GeoPlonk server without a model, for memory measurements of the client side: a ROUTER socket on
    loopback speaking the real protocol (geoplonk_service.protocol), answering `info`, and each `geolocate` at
    once with an `ok` result per photo carrying `blob_bytes` of GeoTIFF + GeoPackage bytes, then `done`.
    `answered` counts the photos answered; `names`, when kept, lists the photos received in order."""

    def __init__(self, blob_bytes: int = 200_000, keep_names: bool = False):
        import zmq

        self.blob = os.urandom(blob_bytes)
        self.answered = 0
        self.names: list[str] | None = [] if keep_names else None
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="stub-server", daemon=True)

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._socket.close()
        self._context.term()

    def summary(self, name: str, options: dict) -> dict:
        return {"best_guess": {"lat": 48.85, "lon": 2.35, "country": "FR", "place": "Paris"},
                "localizability": 0.5, "model": options.get("model") or "stub",
                "options": options, "credible_regions": [{"level": 0.9, "area_km2": 1000.0}],
                "top_places": [{"place": "Paris", "p_within_100km": 0.5, "p_within_500km": 0.7, "basin_share": 0.6}]}

    def _serve(self) -> None:
        import zmq

        half = len(self.blob) // 2
        blobs = [memoryview(self.blob)[:half], memoryview(self.blob)[half:]]
        while not self._stop.is_set():
            if not self._socket.poll(100, zmq.POLLIN):
                continue
            envelope, frames = P.split_envelope(self._socket.recv_multipart())
            try:
                msg = P.decode(frames, P.CLIENT_TYPES)
            except P.ProtocolError:
                continue
            if msg.type == P.INFO:
                fields = {"version": "stub", "protocol": P.PROTOCOL_VERSION, "default_model": "stub",
                          "device": "none", "limits": {"max_image_bytes": P.MAX_IMAGE_BYTES,
                                                       "max_images_per_request": P.MAX_IMAGES_PER_REQUEST,
                                                       "max_message_bytes": P.MAX_MESSAGE_BYTES}}
                self._socket.send_multipart(envelope + P.encode(P.Message(P.INFO, msg.id, fields)))
            elif msg.type == P.GEOLOCATE:
                options = P.validate_options(msg.fields.get("options"))
                images = msg.fields.get("images") or []
                for j, image in enumerate(images):
                    name = str(image.get("name"))
                    if self.names is not None:
                        self.names.append(name)
                    result = P.result_message(msg.id, j, name, P.STATUS_OK, self.summary(name, options),
                                              blobs=blobs)
                    self._socket.send_multipart(envelope + P.encode(result), copy=False)
                    self.answered += 1
                done = P.done_message(msg.id, len(images), 0, 0)
                self._socket.send_multipart(envelope + P.encode(done))


def vm_rss(pid: int | str = "self") -> int | None:
    """The process's resident set size in bytes, from /proc (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def growth_after(samples: list[tuple[int, int]], warm_up: int) -> tuple[int, int]:
    """(RSS at the first sample past `warm_up` photos, the most it rose above that later) from (photos, RSS)."""
    later = [rss for done, rss in samples if done >= warm_up]
    return later[0], max(later) - later[0]


def stub_locate(photos: int, work: Path, blob_bytes: int, warm_up: int = 1000) -> dict:
    """`geoplonk locate` on `photos` files against a StubServer, sampling its VmRSS every 50 ms."""
    folder = work / "stub-photos"
    folder.mkdir(parents=True)
    for i in range(photos):
        (folder / f"p{i:06d}.jpg").write_bytes(i.to_bytes(8, "little") * 128)  # never decoded: 1 kB each
    samples: list[tuple[int, int]] = []
    with StubServer(blob_bytes) as stub:
        started = time.perf_counter()
        with open(os.devnull, "wb") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "model_server.cli", "locate", str(folder), "--out",
                                     str(work / "stub-out"), "--endpoint", stub.endpoint], cwd=REPO, stdout=sink,
                                    stderr=sink)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = vm_rss(proc.pid)
            if rss is not None:
                samples.append((stub.answered, rss))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"locate against the stub failed ({os.waitstatus_to_exitcode(status)})")
    at_warm_up, growth = growth_after(samples, warm_up)
    return {"photos": photos, "blob_kb": round(blob_bytes / 1000), "seconds": round(seconds, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "rss_at_warm_up_mib": round(at_warm_up / 2**20, 1),
            "growth_after_warm_up_mib": round(growth / 2**20, 1), "warm_up_photos": warm_up,
            "keeping_results_would_add_mib": round((photos - warm_up) * blob_bytes / 2**20), "samples": len(samples)}


def make_photos(folder: Path, n: int, size: int) -> Path:
    """n distinct square JPEG tiles (smooth random fields, like aerial tiles at this scale)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=85)
        (folder / f"tile{i:06d}.jpg").write_bytes(buf.getvalue())
    return folder


def run_locate(photos: Path, out: Path, endpoint: str, options: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS of the locate process in bytes)."""
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "model_server.cli", "locate", str(photos), "--out", str(out),
                                 "--endpoint", endpoint, "--timeout", "600", *options], cwd=REPO, stdout=sink,
                                stderr=sink)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"locate failed ({proc.returncode})")
    return time.perf_counter() - started, usage.ru_maxrss * 1024


def stage_costs(out: Path) -> dict[str, float]:
    """Median seconds per photo of each server stage, from the summaries' timings."""
    timings: dict[str, list[float]] = {}
    for path in out.glob("*.json"):
        doc = json.loads(path.read_text())
        for stage, seconds in (doc.get("timings") or {}).items():
            timings.setdefault(stage, []).append(seconds)
    return {stage: round(statistics.median(v), 4) for stage, v in sorted(timings.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--size", type=int, default=256, help="tile side in pixels")
    parser.add_argument("--model", default=None, help="model (default: the default model)")
    parser.add_argument("--samples", type=int, default=P.SAMPLES.default)
    parser.add_argument("--steps", type=int, default=P.STEPS.default)
    parser.add_argument("--solver", choices=P.SOLVERS, default=P.DEFAULT_SOLVER)
    parser.add_argument("--resolution", type=float, default=P.RESOLUTION.default)
    parser.add_argument("--only-memory", action="store_true", help="only locate's peak RSS")
    parser.add_argument("--actors", default="1,2", help="model actor counts to measure")
    parser.add_argument("--stub", action="store_true", help="only locate's memory against a stub server")
    parser.add_argument("--blob-kb", type=int, default=200, help="--stub: kB of result files a photo")
    parser.add_argument("--record", help="--stub: record the run here (a .json file or a folder, render_doc.py)")
    args = parser.parse_args()

    from geoplonk_service.launcher import start_local_server

    options = ["--samples", str(args.samples), "--steps", str(args.steps), "--solver", args.solver,
               "--resolution", str(args.resolution)]
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    report: dict = {"photos": args.photos, "options": options, "cpus": os.cpu_count(),
                    "load_before": os.getloadavg()}
    if args.stub:
        try:
            report = {**stub_locate(args.photos, work, args.blob_kb * 1000), "cpus": os.cpu_count(),
                      "load_before": report["load_before"], "load_after": os.getloadavg()}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(report, indent=2))
        if args.record:
            record_stub(args.record, report)
        return
    try:
        photos = make_photos(work / "photos", args.photos, args.size)
        command = [sys.executable, "-m", "model_server.cli", "serve"] + (["--model", args.model] if args.model else [])
        server = start_local_server(" ".join(command), parent_pid=os.getpid(), idle_timeout=3600, ready_timeout=600)
        try:
            seconds, peak = run_locate(photos, work / "locate", server.endpoint, options)
        finally:
            server.stop()
        report["locate"] = {"seconds": round(seconds, 1), "photos_per_s": round(args.photos / seconds, 3),
                            "peak_rss_mib": round(peak / 2**20, 1)}
        report["stage_seconds_per_photo"] = stage_costs(work / "locate")
        print(json.dumps(report, indent=2), flush=True)
        if not args.only_memory:
            import ray

            from model_server.batch.job import run_job

            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            opts = {"samples": args.samples, "steps": args.steps, "solver": args.solver, "resolution": args.resolution}
            for actors in (int(a) for a in args.actors.split(",")):
                result = run_job(str(photos), str(work / f"batch{actors}"), args.model, opts, actors=actors)
                report[f"batch_{actors}_actors"] = {"seconds": round(result.seconds, 1),
                                                    "photos_per_s": round(result.photos_per_s, 3),
                                                    "counts": result.counts}
                print(json.dumps(report[f"batch_{actors}_actors"]), flush=True)
            ray.shutdown()
        report["load_after"] = os.getloadavg()
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def record_stub(path: str, report: dict) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from render_doc import write_record

    n = report["photos"]
    figures = [
        {"what": f"`geoplonk locate`, {n:,} photos: peak RSS of the process", "value": report["peak_rss_mib"],
         "unit": "MiB"},
        {"what": f"RSS growth after the first {report['warm_up_photos']:,} photos (VmRSS sampled every 50 ms)",
         "value": report["growth_after_warm_up_mib"], "unit": "MiB",
         "compare": f"keeping every result would add {report['keeping_results_would_add_mib']:,} MiB"},
        {"what": "wall time (the stub answers at once: this is the client's own cost)", "value": report["seconds"],
         "unit": "s"},
    ]
    write_record(path, "bench_scale", f"`geoplonk locate` memory over {n:,} photos against a stub server", figures,
                 conditions=f"2 shared cores; load average {report['load_before'][0]:.1f} before, "
                 f"{report['load_after'][0]:.1f} after",
                 notes=[f"The stub answers each photo at once with {report['blob_kb']} kB of GeoTIFF and "
                        "GeoPackage bytes; locate writes its three files a photo and its summary row by row."])


if __name__ == "__main__":
    main()
