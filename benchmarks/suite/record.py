"""The run's record (schema 1 of benchmarks/render_doc.py) from its measurements, and the issue's targets.

Beside schema 1's keys, the record carries `parts` ([{part, title, about}], the page's sections in order),
`targets` ([{key, what, goal, value, unit, met, note}]) and `sizes`; each figure names its `part` and a `key`
(a stable name: README.md's table picks figures by key). render_doc.py renders older records as before.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from types import SimpleNamespace

import render_doc

from .common import BENCHMARK, DEFAULT, DEFAULT_MODEL, LABELS, PARTS, PLONK, Sizes, sig
from .engine import flop_count


class Builder:
    def __init__(self) -> None:
        self.figures: list[dict] = []
        self.parts: list[dict] = []
        self.targets: list[dict] = []

    def part(self, key: str, about: str, title: str | None = None) -> None:
        self.parts.append({"part": key, "title": title or PARTS[key], "about": about})

    def fig(self, part: str, key: str, what: str, value, unit: str = "", compare: str | None = None,
            note: str | None = None) -> None:
        figure = {"part": part, "key": key, "what": what, "value": value, "unit": unit}
        figure.update({k: v for k, v in (("compare", compare), ("note", note)) if v})
        self.figures.append(figure)

    def target(self, key: str, what: str, goal: str, value, unit: str, met: bool, note: str | None = None) -> None:
        target = {"key": key, "what": what, "goal": goal, "value": value, "unit": unit, "met": bool(met)}
        if note:
            target["note"] = note
        self.targets.append(target)


def flop_text(config, flops: dict) -> str:
    d, e, c, depth, i = config.dim, config.expansion, config.cond_dim, config.depth, config.input_dim
    return (
        f"FLOPs per network evaluation (2 per multiply-add, the matmuls only; dim {d}, depth {depth}, expansion {e}, "
        f"cond {c}). Per sample: initial_mapper 2·{i}·{d} + {depth} blocks x two MLP matmuls 2·(2·{d}·{d * e}) + "
        f"final_linear 2·{d}·{i} = {flops['per_sample'] / 1e6:.2f} MFLOP. Per image, the AdaLN modulations, which "
        f"ours computes once per image and the reference once per sample: cond_mapper 2·{c}·{d} + time embedder "
        f"2·{d // 4}·{d} + 2·{d}·{d} + {depth} ada_maps 2·{d}·{3 * d} + final_adaln 2·{d}·{2 * d} = "
        f"{flops['per_image'] / 1e6:.2f} MFLOP. Guidance w != 0 doubles both (the batch carries the conditioned and "
        "the unconditioned field). So n samples x S steps execute S·(n·per-sample + per-image) FLOPs in ours and "
        "S·n·(per-sample + per-image) in the reference; a share of the roofline is that count over the time, over "
        "the matmul roofline of the same precision. Elementwise work (LayerNorm, GELU, SiLU, the Euler update) is "
        "not counted."
    )


def server_precision(raw: dict) -> str:
    """The precision the server runs a "bf16" request in on the run's device (older records: bf16)."""
    return "bf16" if "bf16" in raw.get("precisions", ("fp32", "bf16")) else "fp32"


NO_BF16 = ("This device has no bf16 units (AVX-512 BF16, AMX or a GPU's), so the server runs fp32 for a bf16 "
           "request (model_server.engine.sampling.supported_precision); bf16, which would be emulated, is not "
           "measured.")


def roofline(b: Builder, raw: dict) -> None:
    roof = raw.get("roofline")
    if not roof:
        return
    ways = "the faster of two ways, " if any(len(v) > 1 for v in (roof.get("ways") or {}).values()) else ""
    b.part("roofline", f"torch.mm of two {roof['size']} x {roof['size']} matrices on the device (2·n³ FLOPs), {ways}"
                       f"median of {roof['repeats']} after a warm-up: what the matmul library reaches on this machine."
                       + (" The ways: all cores on one product (intra-op threads), and its rows split over one row "
                          "worker per core, as the samplers run." if ways else ""))
    for name in ("fp32", "bf16"):
        if name in roof:
            by_way = (roof.get("ways") or {}).get(name, {})
            note = ", ".join(f"{way} {rate:,.0f}" for way, rate in by_way.items())
            b.fig("roofline", f"roofline.{name}", f"{name} matmul", round(roof[name]), "GFLOP/s", note=note)


def sampling(b: Builder, raw: dict) -> None:
    result, flops = raw.get("sampling"), raw.get("flops")
    if not result or not flops:
        return
    own = result.get("roofline")  # part 1's matmuls timed in the samplers' rounds (older records: part 1's figure)
    roof = own or raw.get("roofline") or {}
    n, steps, secs = result["n"], result["steps"], result["seconds"]
    served = server_precision(raw)
    b.part("sampling", f"{n:,} samples x {steps} Euler steps of one photo (guidance w = 0) by the PLONK-size flow with "
                       "random weights; sample-steps per second = samples x steps / seconds. "
                       + flop_text(SimpleNamespace(**flops["config"]), flops)
                       + (f" The roofline of the shares is part 1's {own['size']} x {own['size']} matmuls timed in the "
                          "same round-robin rounds as the samplers, since a shared machine's speed changes from "
                          "minute to minute: " + ", ".join(f"{p} {own[p]:,.0f}" for p in ("fp32", "bf16") if p in own)
                          + " GFLOP/s in this run." if own else ""))
    ref = secs.get("reference fp32")
    for name, seconds in secs.items():
        is_ref, precision, key = name.startswith("reference"), name.split()[-1], name.replace(" ", "_")
        work = steps * n * (flops["per_sample"] + flops["per_image"]) if is_ref else \
            steps * (n * flops["per_sample"] + flops["per_image"])
        achieved = work / seconds / 1e9
        share = 100 * achieved / roof[precision] if roof.get(precision) else None
        b.fig("sampling", f"sampling.{key}", f"{name}: sample-steps per second", sig(n * steps / seconds),
              "sample-steps/s", f"{ref / seconds:.2f}x the reference's speed" if ref and not is_ref else None,
              f"{seconds:.3f} s per photo; {achieved:,.0f} GFLOP/s")
        if share is not None:
            b.fig("sampling", f"sampling.{key}.share", f"{name}: share of the {precision} roofline",
                  round(share, 1), "%")
            if name == f"ours {served}":
                # Above 100 % the roofline was measured slower than the work it bounds (other jobs on the cores
                # during the matmul): the share proves nothing either way.
                b.target("sampling_share", f"sampling at the PLONK size, ours {served}"
                         + ("" if served == "bf16" else " (the server's precision here: no bf16 units)"),
                         f">= 70 % of the {served} roofline", round(share, 1), "%", 70 <= share <= 100,
                         "invalid: over 100 %, the roofline was measured under load" if share > 100 else None)


def guidance_text(cfg: float, rule: str | None = None) -> str:
    """Part 3's guidance: every sampler draws the field the server integrates for the model (for a model with a
    land rule, the field of the photos that do not look like land)."""
    if not cfg:
        return "guidance w = 0, which the reference draws too"
    which = (f"w = {cfg:g}, which the server draws for photos that do not look like land (its rule: {rule})"
             if rule else f"w = {cfg:g}, which the server draws")
    return (f"at the model's calibrated guidance {which}; the authors' sampler guides "
            "only at w > 0, so the reference's endpoints are our fp32 Euler's on its path and its time the authors' "
            "sampler's at |w|, the same doubled batch")


def accuracy(b: Builder, raw: dict) -> None:
    for name, result in (raw.get("accuracy") or {}).items():
        label, d = LABELS.get(name, name), result.get("default", {})
        part = f"accuracy.{name}"
        photos = int((result.get("converged") or {}).get("photos", 1))
        scored = "one photo" if photos == 1 else f"{photos} photos, the sample tiles, pooled; timed on the first"
        guidance = guidance_text(result.get("cfg", 0.0), result.get("guidance_rule"))
        about = ("Endpoint distance (km, great circle) of each solver and step count to a converged solution from "
                 f"the same start points ({scored}; {guidance}), and the time of "
                 f"each on {result.get('samples', 0):,} samples, median of several after a warm-up. Ours at the "
                 f"server's default precision ({d.get('precision')}), the reference's Euler in fp32. The server's "
                 f"default sampler: {d.get('solver')}, {d.get('steps')} steps. Measured by {result.get('source')}.")
        b.part(part, about, title=f"{PARTS['accuracy']}: {label}")
        rows = sorted(result["rows"], key=lambda r: (bool(r.get("reference")), r["solver"], r["steps"]))
        refs = [r for r in result["rows"] if r.get("reference")]
        ref32 = refs[0] if refs else None  # the reference's Euler at the server's step count (32)
        dflt = next((r for r in rows if not r.get("reference") and r["solver"] == d.get("solver")
                     and r["steps"] == d.get("steps")), None)
        for r in rows:
            what = r.get("label") or f"ours {r['solver']}, {r['steps']} steps" + (
                f", {r['precision']}" if r.get("precision") else "")
            compare = None
            if ref32 and r is not ref32 and r["seconds"] > 0:
                compare = f"{r['seconds'] / ref32['seconds']:.3g}x the time of the reference's {ref32['steps']}"
            note = "; ".join(x for x in (f"median {sig(r['median_km'])} km, p99 {sig(r['p99_km'])} km",
                                         f"{r['evals']} network evaluations" if r.get("evals") is not None else None,
                                         "the server's default" if r is dflt else None, r.get("note")) if x)
            kind = "reference" if r.get("reference") else r["solver"]
            b.fig(part, f"accuracy.{name}.{kind}.{r['steps']}", what, sig(r["seconds"]), "s", compare, note)
        conv = result.get("converged")
        if conv:
            b.fig(part, f"accuracy.{name}.converged",
                  f"converged solution: {conv['solver']}, {conv['steps']} steps, fp32, {conv['samples']} start points",
                  sig(conv["half_steps_p99_km"]), "km",
                  note=f"its error bar: p99 distance to the same solver at half the steps (median "
                       f"{sig(conv['half_steps_median_km'])} km)")
        if ref32 and dflt:
            accurate = dflt["median_km"] <= ref32["median_km"] and dflt["p99_km"] <= ref32["p99_km"]
            ratio = dflt["seconds"] / ref32["seconds"]
            b.target(f"accuracy_cost.{name}",
                     f"{label}: the default sampler ({d.get('solver')}, {d.get('steps')} steps, {d.get('precision')}) "
                     f"against the reference's {ref32['steps']}-step Euler",
                     "as accurate (median and p99) in <= 1/10 of the reference's time", round(ratio, 3),
                     "x the reference's time", accurate and ratio <= 0.1,
                     f"median {sig(dflt['median_km'])} km, p99 {sig(dflt['p99_km'])} km; the reference's "
                     f"{sig(ref32['median_km'])} km, {sig(ref32['p99_km'])} km"
                     + ("" if accurate else ": less accurate"))


def density(b: Builder, raw: dict) -> None:
    results = raw.get("density") or {}
    if not results:
        return
    matmuls = ("with fp32 matmuls and with bf16 ones (the server's precision; the ODE state, norms and divergence "
               "stay fp32)" if server_precision(raw) == "bf16" else "with fp32 matmuls (the server's precision here)")
    b.part("density", "log_density at points under one photo's flow (exact divergence): rk4 with 16 fixed steps "
                      f"at w = 0 (what calibration and evaluation use; at w != 0 the batch doubles) {matmuls}, "
                      "and the server's localizability as the server computes it "
                      "(model_server.server.pipeline.localizability: its method, steps and number of own samples, at "
                      "the w the server draws the photo at); median of several after a warm-up.")
    for name, result in results.items():
        label, rk4 = LABELS.get(name, name), result["rk4"]
        rate = rk4["points"] / rk4["seconds"]
        b.fig("density", f"density.{name}.rk4", f"{label}: rk4, 16 steps", sig(rate), "points/s",
              note=f"{rk4['points']} points in {rk4['seconds']:.3f} s")
        fast = result.get("rk4_bf16")
        if fast:
            fast_rate = fast["points"] / fast["seconds"]
            b.fig("density", f"density.{name}.rk4_bf16", f"{label}: rk4, 16 steps, bf16 matmuls", sig(fast_rate),
                  "points/s", note=f"{fast['points']} points in {fast['seconds']:.3f} s; against fp32: median "
                  f"|diff| {fast['median_abs_diff_nats']:.2g} nats, max {fast['max_abs_diff_nats']:.2g}")
        srv = result.get("server")
        if srv:
            b.fig("density", f"density.{name}.server",
                  f"{label}: the server's localizability ({srv['method']}, {srv['points']} points)",
                  sig(srv["seconds"]), "s", f"{srv['points'] / srv['seconds']:.1f} points/s")
        if name == PLONK:
            b.target("density_rate", "exact log-density at the PLONK size (rk4, 16 steps), fp32", ">= 50 points/s",
                     sig(rate), "points/s", rate >= 50)
            if fast:
                b.target("density_rate_bf16", "exact log-density at the PLONK size (rk4, 16 steps), bf16 matmuls "
                         "(the server's precision)", ">= 50 points/s", sig(fast_rate), "points/s", fast_rate >= 50)


def options_text(options: dict) -> str:
    out = []
    if options.get("samples") is not None:
        out.append(f"{options['samples']:,} samples")
    if options.get("steps") is not None:
        out.append(f"{options['steps']} {options.get('solver') or ''} steps".replace("  ", " "))
    if options.get("precision"):
        out.append(options["precision"])
    if options.get("cfg") is not None:
        out.append(f"w = {options['cfg']:g}")
    if options.get("resolution") is not None:
        out.append(f"{options['resolution']:g} deg raster")
    return ", ".join(out)


def one_photo(b: Builder, raw: dict) -> None:
    results = raw.get("one_photo") or {}
    if not results:
        return
    b.part("one_photo", "One photo (samples/nile_delta.jpg) through a real `geoplonk serve` after a warm-up photo: "
                        "the client's round trip and the server's own stage timings (each result's summary timings), "
                        "medians. The PLONK-size model: the published-size flow behind a CLIP ViT-L/14 encoder at "
                        "336 px of StreetCLIP's shape (hidden 1024, 24 layers, 16 heads, patch 14, projection 768), "
                        "both with random weights (the time does not depend on the weights).")
    for name, result in results.items():
        label = "PLONK size + ViT-L/14" if name == PLONK else LABELS.get(name, name)
        trip = result["round_trip"]
        b.fig("one_photo", f"one_photo.{name}.round_trip", f"{label}: round trip (client side)", sig(trip), "s",
              note=options_text(result.get("options") or {}))
        for stage, seconds in result["stages"].items():
            b.fig("one_photo", f"one_photo.{name}.{stage}", f"{label}: {stage}", sig(seconds), "s",
                  f"{100 * seconds / trip:.0f} % of the round trip" if trip else None)
        loc = result["stages"].get("localizability")
        if loc is not None and trip:
            b.target(f"localizability_share.{name}", f"{label}: localizability", "<= 10 % of the round trip",
                     round(100 * loc / trip, 1), "%", loc <= 0.1 * trip)
        if name == DEFAULT:
            b.target("one_photo", "default model: one photo, all products, warm server", "< 1 s round trip",
                     sig(trip), "s", trip < 1.0)
            raster, resolution = result["stages"].get("density"), (result.get("options") or {}).get("resolution")
            if raster is not None and resolution == 0.25:
                b.target("raster", "default model: the density raster at 0.25 deg", "< 0.5 s", sig(raster), "s",
                         raster < 0.5)


def batch(b: Builder, raw: dict) -> None:
    result = raw.get("batch")
    if not result:
        return
    count = result["photos"]
    b.part("batch", f"{count} photos (samples/*.jpg in turn) in one job through the default model's server, in the "
                    "client's default requests: photos per second over the job, and the time to the first result the "
                    "client streams (on_result); medians.")
    b.fig("batch", "batch.rate", f"{count} photos: throughput", sig(count / result["seconds"]), "photos/s",
          note=f"{result['seconds']:.2f} s")
    single = ((raw.get("one_photo") or {}).get(DEFAULT) or {}).get("round_trip")
    b.fig("batch", "batch.first_result", f"{count} photos: time to the first result", sig(result["first_result"]), "s",
          f"{result['first_result'] / single:.2f}x the single-photo round trip" if single else None)
    if single:
        ratio = result["first_result"] / single
        b.target("batch_first", f"default model: the first result of {count} photos",
                 "within 1.5x the single-photo round trip", round(ratio, 2), "x", ratio <= 1.5)


def scaling(b: Builder, raw: dict) -> None:
    result = raw.get("scaling")
    if not result:
        return
    b.part("scaling", "The default model's server: one photo at other sample counts and raster cell sizes (the other "
                      "options as in part 5), and jobs of several photos.")
    for row in result.get("samples", []):
        note = (f"sampling {row['sample']:.3f} s, raster {row['density']:.3f} s"
                if row.get("sample") is not None and row.get("density") is not None else None)
        b.fig("scaling", f"scaling.samples.{row['value']}", f"one photo, {row['value']:,} samples",
              sig(row["round_trip"]), "s", note=note)
    for row in result.get("resolution", []):
        b.fig("scaling", f"scaling.resolution.{row['value']:g}", f"one photo, {row['value']:g} deg raster",
              sig(row["round_trip"]), "s",
              note=f"raster {row['density']:.3f} s" if row.get("density") is not None else None)
    for row in result.get("photos", []):
        b.fig("scaling", f"scaling.photos.{row['value']}", f"{row['value']} photo" + ("s" if row["value"] != 1 else ""),
              sig(row["seconds"]), "s", f"{sig(row['seconds'] / row['value'])} s per photo",
              f"first result after {row['first_result']:.2f} s")


def runs(count: int) -> str:
    return f"{count} run" + ("" if count == 1 else "s")


def default_model_note(folder=DEFAULT_MODEL) -> str:
    """Which weights the default model's figures are of: the model is retrained between runs."""
    from model_server.engine.checkpoint import read_manifest

    manifest = read_manifest(folder) or {}
    sha = manifest.get("files", {}).get("model.safetensors", "unknown")
    return f"The default model: {manifest.get('name', folder.name)}, weights sha256 {sha[:8]}... ({folder.name})."


def build_record(raw: dict, *, sizes: Sizes, quick: bool, failures: list, parts: set | None = None,
                 command: str | None = None, now: datetime | None = None) -> dict:
    """The record of one run: every figure with its part and key, the parts' texts, the issue's targets."""
    now = now or datetime.now(timezone.utc).replace(microsecond=0)
    b = Builder()
    for add in (roofline, sampling, accuracy, density, one_photo, batch, scaling):
        add(b, raw)
    notes = [
        f"{raw.get('threads')} torch threads in the benchmark's process (the servers': their default). Medians of "
        f"{runs(sizes.repeats)} after a warm-up in parts 1-4 (roofline: {sizes.roofline_repeats}), "
        f"{runs(sizes.server_repeats)} in part 5, {runs(sizes.batch_repeats)} in part 6, "
        f"{runs(sizes.scaling_repeats)} in part 7.",
        "The reference runs in the same process as ours, so with denormal floats flushed to zero as our sampler sets "
        "it (model_server.engine.runtime).",
    ]
    notes.append(default_model_note())
    if server_precision(raw) != "bf16":
        notes.append(NO_BF16)
    wall = raw.get("wall_s") or {}
    if wall:
        notes.append("Wall time: " + ", ".join(f"{PARTS.get(k, k)} {v:.0f} s" for k, v in wall.items() if k != "total")
                     + (f"; {wall['total']:.0f} s in all, servers' starts and model folders included"
                        if "total" in wall else "") + ".")
    if quick:
        notes.insert(0, "A smoke run (--quick or --dry-run): tiny sizes, a 1-layer ViT; the figures mean nothing.")
    for result in (raw.get("accuracy") or {}).values():
        notes += result.get("notes") or []
    notes += [f"Failed: {failure}" for failure in failures]
    device = raw.get("device", "cpu")
    met = sum(t["met"] for t in b.targets)
    machine = render_doc.machine(raw.get("device_name") or device)
    if raw.get("server_device"):
        machine["server_device"] = raw["server_device"]
    ran = "every figure of issue 21" if parts is None or set(PARTS) <= set(parts) else \
        "parts " + ", ".join(PARTS[p].split(".")[0] for p in PARTS if p in parts) + " of issue 21's figures"
    load = raw.get("load") or {}
    conditions = None
    if "start" in load:
        conditions = (f"1-minute load average {load['start']:.2f} at the start"
                      + (f", {load['end']:.2f} at the end (this run's own work included)" if "end" in load else "")
                      + f", on {load.get('cores')} cores")
    record = {
        "schema": render_doc.SCHEMA,
        "benchmark": BENCHMARK,
        "title": ("Smoke run: " if quick else "") + f"{ran} in one run on {device}; "
                 f"{met} of {len(b.targets)} targets met",
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine,
        "command": command if command is not None else render_doc.command_line(),
        **({"conditions": conditions} if conditions else {}),
        "figures": b.figures,
        "parts": b.parts,
        "targets": b.targets,
        "sizes": asdict(sizes),
        "notes": notes,
    }
    return record


def synthetic_raw() -> dict:
    """Made-up measurements of every part (--dry-run): to check the record and its page, measuring nothing."""
    config = {"cond_dim": 1024, "depth": 12, "dim": 512, "expansion": 4, "input_dim": 3}
    rows = [{"solver": s, "steps": k, "precision": "bf16", "evals": k * (1 + (s == "heun")), "seconds": 0.1 * k,
             "median_km": 100 / k, "p99_km": 400 / k} for s in ("euler", "heun") for k in (4, 8, 16, 32)]
    rows += [{"solver": "euler", "label": f"reference Euler, {k} steps", "steps": k, "precision": "fp32", "evals": k,
              "seconds": 0.4 * k, "median_km": 90 / k, "p99_km": 380 / k, "reference": True} for k in (32, 250)]
    accuracy = {"rows": rows, "source": "made up (--dry-run)", "samples": 1024, "cfg": 0.0,
                "default": {"solver": "euler", "steps": 32, "precision": "bf16"},
                "converged": {"solver": "heun", "steps": 256, "precision": "fp32", "samples": 128,
                              "half_steps_median_km": 0.01, "half_steps_p99_km": 0.05}}
    stages = {"decode": 0.01, "embed": 0.03, "sample": 0.6, "localizability": 0.2, "density": 0.4, "regions": 0.05,
              "places": 0.02, "write": 0.05}
    options = {"samples": 1024, "steps": 32, "solver": "euler", "precision": "bf16", "cfg": -0.05, "resolution": 0.25}
    return {
        "device": "cpu", "threads": 2, "server_device": "cpu",
        "flops": {"config": config, **flop_count(SimpleNamespace(**config))},
        "roofline": {"size": 4096, "repeats": 5, "fp32": 150.0, "bf16": 400.0},
        "sampling": {"n": 1024, "steps": 32, "seconds": {"ours fp32": 12.0, "ours bf16": 4.5, "reference fp32": 13.5}},
        "accuracy": {PLONK: accuracy, DEFAULT: accuracy},
        "density": {name: {"rk4": {"points": 64, "steps": 16, "seconds": 2.0},
                           "server": {"points": 64, "method": "exact-midpoint", "seconds": 0.5}}
                    for name in (PLONK, DEFAULT)},
        "one_photo": {DEFAULT: {"round_trip": 1.5, "stages": stages, "options": options, "repeats": 3},
                      PLONK: {"round_trip": 9.0, "stages": {**stages, "embed": 2.0, "sample": 5.0},
                              "options": {**options, "cfg": 0.0}, "repeats": 3}},
        "batch": {"photos": 32, "seconds": 40.0, "first_result": 2.0, "repeats": 2},
        "scaling": {
            "samples": [{"value": v, "round_trip": 0.5 + v / 1000, "sample": v / 2000, "density": 0.3}
                        for v in (256, 1024, 4096)],
            "resolution": [{"value": v, "round_trip": 1.0 + 0.1 / v, "density": 0.1 / v} for v in (1.0, 0.5, 0.25)],
            "photos": [{"value": v, "seconds": 1.3 * v, "first_result": 1.5} for v in (1, 8, 32)],
        },
    }
