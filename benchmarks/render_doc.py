"""Regenerate docs/benchmarks.md from the recorded runs in benchmarks/results/*.json (standard library only).

  /usr/bin/python3 benchmarks/render_doc.py           # rewrite docs/benchmarks.md (and README.md's table)
  /usr/bin/python3 benchmarks/render_doc.py --check   # exit 1 when either is out of date

The benchmark scripts record a run with `--record PATH` (a .json file, or a folder such as
benchmarks/results/) through `write_record` below; `make bench` (benchmarks/bench_all.py) writes
benchmarks/results/<YYYY-MM-DD>.json through `write_json`. A record is one JSON object (schema 1):

  schema      1
  benchmark   the script's name without .py (bench_stages, ...), or the name of a measurement made otherwise
  title       what the run measured, in one line
  date        when it ran: YYYY-MM-DD, or a UTC timestamp (YYYY-MM-DDTHH:MM:SSZ) when a script wrote it
  machine     {"description": one line, and where known "cpu", "cores", "bf16_units" (the faster of AMX and
              AVX-512 the CPU has), "torch", "device"}
  command     the exact command line (text with `code` in it when no single command ran)
  command_note optional: how the command was run (environment, working folder)
  conditions  optional: what else ran on the machine ("machine otherwise idle")
  source      optional: where a figure written down by hand was first published (file and commit)
  figures     [{"what", "value", "unit", "compare" (optional), "note" (optional)}]; "value" is a number,
              or a string kept digit for digit as first published
  notes       optional: a list of sentences

bench_all's records add, all optional (records without them render as before):
  parts       [{"part", "title", "about"}]: the run's sections in order; a figure's "part" names its section
  targets     [{"key", "what", "goal", "value", "unit", "met" (true/false), "note" (optional)}]
  figure "key" a stable name of the figure; README.md's Performance table picks the newest bench_all
              record's figures by key (README_ROWS) between the README_BEGIN and README_END lines
  sizes       the run's sizes and repeat counts
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "benchmarks.md"
README = REPO / "README.md"
SCHEMA = 1
REQUIRED = ("benchmark", "title", "date", "machine", "command", "figures")

# Sections in this order (others follow alphabetically): heading and what the benchmark measures.
BENCHMARKS = {
    "bench_all": (
        "Every figure in one run (`make bench`)",
        "`benchmarks/bench_all.py`: the matmul roofline, sampling at the PLONK size against the reference, accuracy "
        "against cost per solver, exact log-density, one photo and a batch through a warm server, and how the time "
        "grows, measured in one process; the issue's targets (issue 21) met or not. Each figure is the median of "
        "several runs after a warm-up; each comparison a ratio within the run.",
    ),
    "bench_stages": (
        "One photo through the server",
        "`benchmarks/bench_stages.py`: one photo through a real `geoplonk serve`; the server's stage timings "
        "(medians) and the client's round trip, for each sampler precision and guidance asked for.",
    ),
    "bench_cpu_precision": (
        "Precision by CPU",
        "`benchmarks/bench_cpu_precision.py`: one photo's distribution draws on the default model through the "
        "module's forward() in fp32, the server's fp32 evaluator and its bf16 one, on this CPU and limited to "
        "AVX2 as most laptops are; which precision the server runs for a \"bf16\" request on each.",
    ),
    "bench_engine": (
        "Sampling at the published model size",
        "`benchmarks/bench_engine.py`: 1,024 samples x 32 Euler steps with random weights at the published "
        "PLONK size (dim 512, depth 12, cond 1024), ours against the authors' sampler in the same run.",
    ),
    "bench_solvers": (
        "Sampler accuracy against time",
        "`benchmarks/bench_solvers.py`: per solver and step count, the median and 99th percentile distance (km) "
        "of each sample's endpoint from a converged solution from the same start points, and the seconds per "
        "photo, on the default model and at the PLONK size, with the reference's 32- and 250-step Euler (fp32).",
    ),
    "bench_encoder": (
        "The image encoder",
        "`benchmarks/bench_encoder.py`: EfficientNet-Lite0 on the CPU, as shipped against other layouts "
        "and batchings, on the same batch of sample tiles.",
    ),
    "bench_training": (
        "Training step",
        "`benchmarks/bench_training.py`: milliseconds per optimiser step of the default model's flow head "
        "(dim 256, depth 6, cond 1280, batch 256, random data).",
    ),
    "bench_raster_nll": (
        "Density raster against the exact likelihood",
        "`benchmarks/bench_raster_nll.py`: negative log-likelihood (nats per steradian; uniform = 2.531) "
        "of held-out true locations under the exact likelihood, the samples' kernel density and the raster.",
    ),
    "bench_raster": (
        "Density raster evaluation",
        "`benchmarks/bench_raster.py`: seconds to evaluate the kernel density raster (products/raster_sum.py: "
        "tiles for sharp kernels, a Fourier series per row for wide ones) against the row-by-row sum it "
        "replaced, on the same bandwidths, and the largest error per cell against the exact sum.",
    ),
    "bench_scale": (
        "Archives: `geoplonk locate`'s memory",
        "`benchmarks/bench_scale.py --stub`: `geoplonk locate` writing the outputs of many photos answered at once "
        "by a stub server (the real protocol, no model); the locate process's peak RSS and its growth after "
        "warm-up (docs/scale.md).",
    ),
    "build_default_model": (
        "Building the default model",
        "`scripts/build_default_model.sh` (`make default-model`): time per step of a build from nothing.",
    ),
}

HEADER = """\
<!-- Generated by benchmarks/render_doc.py from benchmarks/results/*.json. Do not edit by hand. -->
# Benchmarks

This page is generated from the recorded runs in `benchmarks/results/` (one JSON file per run).
`make bench` runs every figure in one process (13 to 25 minutes on two CPU cores with bf16 units, 52 on two
without), records `benchmarks/results/<YYYY-MM-DD>.json` (`<YYYY-MM-DD>T<HHMM>.json` for a second run that day)
and regenerates this page and README.md's Performance table.
A single benchmark script records a run with `--record benchmarks/results/`; then regenerate this page:

```sh
make bench                                   # or: .venv/server/bin/python benchmarks/bench_all.py [--quick]
.venv/server/bin/python benchmarks/bench_stages.py --record benchmarks/results/
/usr/bin/python3 benchmarks/render_doc.py
```

Every run names its command, machine and date. Machines of one kind differ in speed:
compare figures within one run. Runs first written down by hand name the page and commit
that published them, and the machine by its kind: their CPU model was not recorded with them.
"""


# Recording (called by the benchmark scripts)


def machine(device: str | None = None) -> dict:
    """This machine, as far as the standard library can tell: CPU model, cores, torch version, device."""
    cpu, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not cpu:
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine()
    cores = os.cpu_count()
    # AMX tiles run bf16 matmuls several times faster than AVX-512's dot products: name the faster unit
    bf16_units = "AMX" if "amx_bf16" in flags else "AVX-512" if "avx512_bf16" in flags else ""
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    units = f"{bf16_units} bf16" if bf16_units else f"{vector}, no bf16" if vector else ""
    described = f"{cores}-core {cpu}" + (f" ({units})" if units else "")
    info: dict = {"cpu": cpu, "cores": cores, "os": f"{platform.system()} {platform.release()}"}
    if bf16_units:
        info["bf16_units"] = bf16_units
    try:
        info["torch"] = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        pass
    if device:
        info["device"] = device
        described += f", device {device}"
    return {"description": described, **info}


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran, without its --record option; the interpreter relative to here when it is below."""
    argv = list(sys.argv if argv is None else argv)
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--record":
            skip = True
        elif not arg.startswith("--record="):
            kept.append(arg)
    python = os.path.relpath(sys.executable)
    return shlex.join([sys.executable if python.startswith("..") else python, *kept])


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename (mode 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(path: str | os.PathLike, benchmark: str, title: str, figures: list[dict], *,
                 device: str | None = None, conditions: str | None = None,
                 notes: list[str] | tuple[str, ...] = ()) -> Path:
    """Record one run as JSON at `path` (a folder: `<benchmark>-<UTC time>.json` in it); returns the file."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    record: dict = {
        "schema": SCHEMA,
        "benchmark": benchmark,
        "title": title,
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(device),
        "command": command_line(),
    }
    if conditions:
        record["conditions"] = conditions
    record["figures"] = [{k: v for k, v in f.items() if v is not None} for f in figures]
    if notes:
        record["notes"] = list(notes)
    target = Path(path)
    if target.is_dir() or str(path).endswith(("/", os.sep)):
        target = target / f"{benchmark}-{now.strftime('%Y-%m-%dT%H%M%SZ')}.json"
    write_json(target, record)
    print(f"recorded {target}")
    return target


def write_json(path: str | os.PathLike, record: dict) -> Path:
    """Write a record that `validate` accepts as JSON at `path` (ValueError naming the problems otherwise)."""
    problems = validate(record)
    if problems:
        raise ValueError("not a valid record: " + "; ".join(problems))
    atomic_write_text(Path(path), json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return Path(path)


def validate(record: dict) -> list[str]:
    """What is wrong with a record (schema 1 and bench_all's optional keys); empty when nothing is."""
    if not isinstance(record, dict):
        return ["a record is a JSON object"]
    problems = [f"missing {key}" for key in REQUIRED if key not in record]
    if record.get("schema", SCHEMA) != SCHEMA:
        problems.append(f"schema {record['schema']!r}, this script reads {SCHEMA}")
    figures = record.get("figures", [])
    if not isinstance(figures, list) or not all(isinstance(f, dict) and "what" in f and "value" in f for f in figures):
        problems.append("figures must be a list of objects with what and value")
        figures = []
    if not isinstance(record.get("machine", {}), dict):
        problems.append("machine must be an object")
    parts = record.get("parts", [])
    if not isinstance(parts, list) or not all(isinstance(p, dict) and "part" in p and "title" in p for p in parts):
        problems.append("parts must be a list of objects with part and title")
    else:
        named = {p["part"] for p in parts}
        stray = sorted({str(f["part"]) for f in figures if "part" in f and f["part"] not in named})
        if parts and stray:
            problems.append(f"figures name parts the record does not list: {', '.join(stray)}")
    targets = record.get("targets", [])
    if not isinstance(targets, list) or not all(
            isinstance(t, dict) and {"what", "goal", "value", "met"} <= set(t) and isinstance(t["met"], bool)
            for t in targets):
        problems.append("targets must be a list of objects with what, goal, value and met (true or false)")
    keys = [f["key"] for f in figures if "key" in f]
    if len(keys) != len(set(keys)):
        problems.append("figure keys repeat: " + ", ".join(sorted({k for k in keys if keys.count(k) > 1})))
    for figure in figures:
        value = figure["value"]
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            problems.append(f"{figure['what']}: value {value} is not a number")
    return problems


# Rendering


def load(folder: Path) -> list[tuple[Path, dict]]:
    runs = []
    for file in sorted(folder.glob("*.json")):
        record = json.loads(file.read_text(encoding="utf-8"))
        problems = validate(record)
        if problems:
            raise SystemExit(f"{file}: {'; '.join(problems)}")
        runs.append((file, record))
    return runs


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def value_text(figure: dict) -> str:
    value, unit = figure.get("value", ""), figure.get("unit", "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        text = str(value)
    else:
        text = f"{value:,}"
    if not unit:
        return text
    return f"{text}x" if unit == "x" else f"{text} {unit}"


def machine_text(m: dict) -> str:
    text = m.get("description", "")
    extras = []
    if m.get("torch") and "torch" not in text:
        extras.append(f"torch {m['torch']}")
    if m.get("device") and "device" not in text and m["device"] not in text:
        extras.append(f"device {m['device']}")
    return "; ".join([text, *extras]) if extras else text


def render_run(file: Path, run: dict) -> list[str]:
    date = str(run["date"])
    lines = [f"### {date[:10]}: {run['title']}", ""]
    command = str(run["command"])
    command = command if "`" in command else f"`{command}`"
    lines.append(f"- Command: {command}" + (f" ({run['command_note']})" if run.get("command_note") else ""))
    lines.append(f"- Machine: {machine_text(run['machine'])}")
    if run.get("conditions"):
        lines.append(f"- Conditions: {run['conditions']}")
    if len(date) > 10:
        lines.append(f"- Recorded: {date}")
    recorded = f"`{file.relative_to(REPO).as_posix()}`" if file.is_relative_to(REPO) else f"`{file.name}`"
    lines.append(f"- Record: {recorded}" + (f"; first published in {run['source']}" if run.get("source") else ""))
    lines.append("")
    if run.get("targets") or run.get("parts"):
        lines += render_parts(run)
    else:
        lines += figure_table(run["figures"])
    notes = run.get("notes") or []
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
    lines.append("")
    return lines


def figure_table(figures: list[dict]) -> list[str]:
    columns = [("figure", lambda f: f.get("what", "")), ("value", value_text)]
    if any(f.get("compare") for f in figures):
        columns.append(("compared", lambda f: f.get("compare", "")))
    if any(f.get("note") for f in figures):
        columns.append(("note", lambda f: f.get("note", "")))
    lines = ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    for figure in figures:
        lines.append("| " + " | ".join(cell(get(figure)) for _, get in columns) + " |")
    return lines


def render_parts(run: dict) -> list[str]:
    """A bench_all run: its targets table, then a section per part (its text, then its figures)."""
    lines: list[str] = []
    targets = run.get("targets") or []
    if targets:
        met = sum(1 for t in targets if t["met"])
        lines += [f"#### Targets (issue 21): {met} of {len(targets)} met", "",
                  "| target | goal | figure | met |", "|---|---|---|---|"]
        for t in targets:
            figure = value_text(t) + (f" ({t['note']})" if t.get("note") else "")
            met_text = "yes" if t["met"] else "**no**"
            lines.append(f"| {cell(t['what'])} | {cell(t['goal'])} | {cell(figure)} | {met_text} |")
        lines.append("")
    listed = run.get("parts") or []
    sections = [(p["part"], p["title"], p.get("about", "")) for p in listed]
    named = {part for part, _, _ in sections}
    if any(f.get("part") not in named for f in run["figures"]):
        sections.append((None, "Other figures", ""))
    for part, title, about in sections:
        figures = [f for f in run["figures"] if (f.get("part") if f.get("part") in named else None) == part]
        if not figures and not about:
            continue
        lines += [f"#### {title}", ""]
        if about:
            lines += [about, ""]
        if figures:
            lines += figure_table(figures) + [""]
    return lines[:-1] if lines and lines[-1] == "" else lines


# README.md's Performance table, from the newest bench_all record.
README_BEGIN = "<!-- benchmarks: begin; generated by benchmarks/render_doc.py from the newest `make bench` record -->"
README_END = "<!-- benchmarks: end -->"
# README.md's rows, each a list of (what, figure keys) alternatives: the first whose figures the record holds is
# shown (a run on a CPU without bf16 units has no bf16 figures).
README_ROWS = (
    [("one photo, default model, server defaults, warm server: client round trip",
      ("one_photo.default model.round_trip",))],
    [("one photo, PLONK size behind a ViT-L/14 encoder (random weights): client round trip",
      ("one_photo.plonk-size.round_trip",))],
    [("32 photos, default model: throughput / time to the first result", ("batch.rate", "batch.first_result"))],
    [("1,024 samples x 32 steps at the PLONK size, sample-steps per second: bf16 / fp32 / the reference's fp32",
      ("sampling.ours_bf16", "sampling.ours_fp32", "sampling.reference_fp32")),
     ("1,024 samples x 32 steps at the PLONK size, sample-steps per second: fp32 (bf16 not native here) / the "
      "reference's fp32", ("sampling.ours_fp32", "sampling.reference_fp32"))],
    [("the same, bf16: share of this machine's bf16 matmul roofline", ("sampling.ours_bf16.share",)),
     ("the same, fp32: share of this machine's fp32 matmul roofline", ("sampling.ours_fp32.share",))],
    [("exact log-density at the PLONK size (rk4, 16 steps): fp32 / bf16 matmuls",
      ("density.plonk-size.rk4", "density.plonk-size.rk4_bf16")),
     ("exact log-density at the PLONK size (rk4, 16 steps), fp32", ("density.plonk-size.rk4",))],
)


def readme_block(runs: list[tuple[Path, dict]]) -> str | None:
    """README.md's Performance table from the newest bench_all record, or None when there is none."""
    ours = [(file, run) for file, run in runs if run["benchmark"] == "bench_all" and run.get("targets") is not None]
    if not ours:
        return None
    file, run = max(ours, key=lambda item: (str(item[1]["date"]), item[0].name))
    figures = {f["key"]: f for f in run["figures"] if "key" in f}
    lines = [README_BEGIN,
             f"Measured by `make bench` on {str(run['date'])[:10]}: {machine_text(run['machine'])}. Machines of one "
             "kind differ in speed: [docs/benchmarks.md](docs/benchmarks.md) holds every run with its command, "
             "machine and date, and the figures behind these.", "", "| what | figure |", "|---|---|"]
    for row in README_ROWS:
        shown = next(((what, keys) for what, keys in row if all(key in figures for key in keys)), None)
        if shown:
            what, keys = shown
            chosen = [figures[key] for key in keys]
            if len({f.get("unit", "") for f in chosen}) == 1 and chosen[0].get("unit", "") not in ("", "x"):
                text = " / ".join(value_text({**f, "unit": ""}) for f in chosen) + f" {chosen[0]['unit']}"
            else:
                text = " / ".join(value_text(f) for f in chosen)
            lines.append(f"| {cell(what)} | {cell(text)} |")
    targets = run.get("targets") or []
    met = sum(1 for t in targets if t["met"])
    lines.append(f"| the targets of issue 21 met (which: [docs/benchmarks.md](docs/benchmarks.md)) "
                 f"| {met} of {len(targets)} |")
    lines.append(README_END)
    return "\n".join(lines)


def with_readme_block(text: str, block: str) -> str | None:
    """README.md's text with its marked block replaced, or None when it has no such block."""
    start = text.find(README_BEGIN.split(";")[0])
    end = text.find(README_END, start)
    if start < 0 or end < 0:
        return None
    return text[:start] + block + text[end + len(README_END):]


def render(runs: list[tuple[Path, dict]]) -> str:
    by_benchmark: dict[str, list[tuple[Path, dict]]] = {}
    for file, run in runs:
        by_benchmark.setdefault(run["benchmark"], []).append((file, run))
    order = [name for name in BENCHMARKS if name in by_benchmark]
    order += sorted(name for name in by_benchmark if name not in BENCHMARKS)
    lines = [HEADER, "## Contents", ""]
    for name in order:
        heading = BENCHMARKS.get(name, (name, ""))[0]
        count = len(by_benchmark[name])
        lines.append(f"- {heading} (`{name}`): {count} run{'s' if count != 1 else ''}")
    lines.append("")
    for name in order:
        heading, about = BENCHMARKS.get(name, (name, ""))
        lines += [f"## {heading}", ""]
        if about:
            lines += [about, ""]
        # newest first; the same date: by file name
        ordered = sorted(by_benchmark[name], key=lambda item: item[0].name)
        ordered.sort(key=lambda item: str(item[1]["date"]), reverse=True)
        for file, run in ordered:
            lines += render_run(file, run)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of recorded runs (*.json)")
    parser.add_argument("--out", type=Path, default=DOC, help="the page to write")
    parser.add_argument("--readme", type=Path, default=README,
                        help="the README whose marked Performance table to rewrite from the newest bench_all record")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page is out of date")
    args = parser.parse_args(argv)
    runs = load(args.results)
    pages = [(args.out, render(runs), args.out.read_text(encoding="utf-8") if args.out.is_file() else None)]
    block = readme_block(runs)
    if block is not None and args.readme.is_file():
        current = args.readme.read_text(encoding="utf-8")
        text = with_readme_block(current, block)
        if text is None:
            print(f"{args.readme} has no {README_BEGIN.split(';')[0]} ... {README_END} block: left as it is",
                  file=sys.stderr)
        else:
            pages.append((args.readme, text, current))
    status = 0
    for path, text, current in pages:
        if args.check:
            if current != text:
                print(f"{path} is out of date: run {Path(sys.argv[0]).as_posix()}", file=sys.stderr)
                status = 1
        elif current != text:
            atomic_write_text(path, text)
            print(f"wrote {path}")
        else:
            print(f"{path} is up to date")
    return status


if __name__ == "__main__":
    sys.exit(main())
