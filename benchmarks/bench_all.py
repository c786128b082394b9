"""Every benchmark figure of issue 21 in one process, against the authors' code where it has one (`make bench`).

  .venv/server/bin/python benchmarks/bench_all.py             # full run, 13-25 min on 2 CPU cores with bf16
                                                              # units, 52 min on 2 without (fp32): records
                                                              # benchmarks/results/<YYYY-MM-DD>[T<HHMM>].json,
                                                              # regenerates docs/benchmarks.md and README's table
  .venv/server/bin/python benchmarks/bench_all.py --quick     # smoke run at tiny sizes (< 2 min); records nothing
  .venv/server/bin/python benchmarks/bench_all.py --dry-run   # measures nothing: made-up figures, checked and rendered

Parts (each figure the median of several runs after a warm-up; each comparison a ratio from the same run):
  roofline    1  fp32 and bf16 GFLOP/s of a large square matmul on the device
  sampling    2  sample-steps per second at the published PLONK size (dim 512, depth 12, cond 1024, random weights),
                 ours fp32 and bf16 against the reference's fp32, and their share of the roofline
  accuracy    3  endpoint distance to a converged solution against time, per solver and step count, for the
                 PLONK-size flow and the default model (benchmarks/bench_solvers.py's measurement when it exists)
  density     4  exact log-density points per second (rk4, 16 steps; the server's localizability)
  one_photo   5  one photo through a warm `geoplonk serve`, stage by stage: the default model, and the PLONK-size
                 flow behind a ViT-L/14 encoder of StreetCLIP's shape (random weights)
  batch       6  32 photos through the server: photos per second, time to the first result
  scaling     7  how the time grows with samples, photos and raster resolution
bf16 is measured only where the device has bf16 units: elsewhere the server runs fp32, and so does every part.
The device is chosen at run time (CUDA when present, or --device). The record (schema 1 of render_doc.py: every
figure, the issue's targets met or not, the machine) is what benchmarks/render_doc.py renders.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import render_doc  # noqa: E402
from suite.common import PARTS, QUICK, Sizes, log  # noqa: E402
from suite.record import build_record, synthetic_raw  # noqa: E402


def device_choice(requested: str | None) -> tuple[str, str]:
    """(device, its description): the requested one, else CUDA when present, else the CPU."""
    import torch

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda":
        return device, f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device, device


def print_targets(record: dict) -> None:
    log("\nTargets (issue 21):")
    for t in record["targets"]:
        log(f"  [{'met' if t['met'] else 'NOT MET'}] {t['what']}: {render_doc.value_text(t)} (goal: {t['goal']})"
            + (f"; {t['note']}" if t.get("note") else ""))
    if not record["targets"]:
        log("  (no target could be evaluated in this run)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (< 2 min); records nothing")
    parser.add_argument("--dry-run", action="store_true",
                        help="measure nothing: made-up figures, checked and rendered (written to --record if given)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated parts to run (default: all): " + ", ".join(PARTS))
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when present)")
    parser.add_argument("--threads", type=int, help="torch threads in this process (default: torch's)")
    parser.add_argument("--record", metavar="PATH",
                        help="write the record here (a .json file, or a folder: <YYYY-MM-DD>.json in it, "
                             "<YYYY-MM-DD>T<HHMM>.json for a second run the same day); default: benchmarks/results/ "
                             "for a full run of every part, else nowhere")
    parser.add_argument("--no-doc", action="store_true", help="do not regenerate docs/benchmarks.md and README.md")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}; choose from {', '.join(PARTS)}")
    sizes = QUICK if args.quick else Sizes()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    failures: list[str] = []

    if args.dry_run:
        raw = synthetic_raw()
    else:
        import torch
        from suite import engine, server

        if args.threads:
            torch.set_num_threads(args.threads)
        device, description = device_choice(args.device)
        raw = {"device": device, "device_name": description, "threads": torch.get_num_threads(),
               "load": {"cores": os.cpu_count(), "start": os.getloadavg()[0]}}
        log(f"bench_all: torch {torch.__version__}, device {description}, {torch.get_num_threads()} threads, "
            f"{'quick' if args.quick else 'full'} sizes; parts: {', '.join(p for p in PARTS if p in parts)}")
        if raw["load"]["start"] > 0.5 * (os.cpu_count() or 1):
            log(f"!! the machine is busy (1-minute load average {raw['load']['start']:.1f} on {os.cpu_count()} cores): "
                "its other jobs slow every figure down, OpenMP threads most (10x seen on 2 cores). The record says so.")
        started = time.perf_counter()
        engine.run(sizes, device, parts, args.quick, raw, failures)
        server.run(sizes, parts, raw, failures)
        raw.setdefault("wall_s", {})["total"] = time.perf_counter() - started
        raw["load"]["end"] = os.getloadavg()[0]
        log(f"\nmeasured in {raw['wall_s']['total']:.0f} s")

    record = build_record(raw, sizes=sizes, quick=args.quick or args.dry_run, failures=failures, parts=parts, now=now)
    problems = render_doc.validate(record)
    if problems:
        log("the record does not validate:\n  " + "\n  ".join(problems))
        return 2
    print_targets(record)
    target = args.record
    if target is None and parts == set(PARTS) and not (args.quick or args.dry_run):
        target = str(render_doc.RESULTS)
    if target is None:
        render_doc.render([(render_doc.RESULTS / "smoke.json", record)])  # a smoke run checks that the page shows it
        log("(nothing recorded: --record PATH keeps a run)")
    else:
        path = Path(target)
        if path.is_dir() or target.endswith(("/", os.sep)):
            path = path / f"{now.strftime('%Y-%m-%d')}.json"
            if path.exists():  # an earlier run the same day keeps its record
                path = path.with_name(f"{now.strftime('%Y-%m-%dT%H%M')}.json")
        in_results = path.resolve().parent == render_doc.RESULTS.resolve()
        if in_results and (args.quick or args.dry_run):
            log(f"a smoke run is not recorded in {render_doc.RESULTS}: the page and README.md would show it")
            return 2
        render_doc.write_json(path, record)
        log(f"recorded {path}")
        if in_results and not args.no_doc:
            render_doc.main([])
    for failure in failures:
        log(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
