"""Encoder speed on the CPU: EfficientNet-Lite0 as shipped (channels-last, a few images per pass) against one
pass over the whole batch and against the library's default layout.

Embeds the same batch of sample tiles each way in one run and prints ms per image, the ratios and the
largest differences between the feature sets.

  .venv/server/bin/python benchmarks/bench_encoder.py [--threads 2] [--batch 64] [--repeat 3] [--record PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model_server.engine.encoders import CPU_MICRO_BATCH, load_encoder  # noqa: E402
from model_server.images import decode_image  # noqa: E402


def ms_per_image(forward, pixels: torch.Tensor, repeat: int) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        out = forward(pixels)  # warm-up
        start = time.perf_counter()
        for _ in range(repeat):
            out = forward(pixels)
    return (time.perf_counter() - start) / repeat / len(pixels) * 1000, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--record", metavar="PATH",
                   help="also write the figures as JSON (a file, or a folder: benchmarks/results/); "
                        "then run benchmarks/render_doc.py")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    photos = sorted((REPO / "samples").glob("*.jpg"))
    encoder = load_encoder("efficientnet-lite0")
    images = [decode_image(photos[i % len(photos)].read_bytes()) for i in range(args.batch)]
    pixels = torch.stack([torch.from_numpy(encoder.preprocess(im)) for im in images])

    shipped_ms, shipped = ms_per_image(encoder.forward_batch, pixels, args.repeat)
    one_pass_ms, one_pass = ms_per_image(encoder.features_in_one_pass, pixels, args.repeat)
    encoder.net = encoder.net.to(memory_format=torch.contiguous_format)
    default_ms, default = ms_per_image(lambda x: encoder.net.extract_features(x).mean(dim=(2, 3)), pixels,
                                       args.repeat)
    print(f"efficientnet-lite0, {args.threads} threads, batch {args.batch}: shipped (channels-last, "
          f"{CPU_MICRO_BATCH} images a pass) {shipped_ms:.1f} ms/image; channels-last in one pass {one_pass_ms:.1f} "
          f"({one_pass_ms / shipped_ms:.2f}x the time); default layout in one pass {default_ms:.1f} "
          f"({default_ms / shipped_ms:.2f}x); largest feature difference {(shipped - one_pass).abs().max():.1e} "
          f"and {(shipped - default).abs().max():.1e}")
    if args.record:
        from render_doc import write_record

        write_record(args.record, "bench_encoder", f"EfficientNet-Lite0, batch {args.batch}, threads {args.threads}", [
            {"what": f"shipped (channels-last, {CPU_MICRO_BATCH} images a pass)", "value": round(shipped_ms, 1),
             "unit": "ms per image"},
            {"what": "channels-last, the whole batch in one pass", "value": round(one_pass_ms, 1),
             "unit": "ms per image",
             "compare": f"{one_pass_ms / shipped_ms:.2f}x the shipped time",
             "note": f"largest feature difference {(shipped - one_pass).abs().max():.1e}"},
            {"what": "the library's default layout, one pass", "value": round(default_ms, 1), "unit": "ms per image",
             "compare": f"{default_ms / shipped_ms:.2f}x the shipped time",
             "note": f"largest feature difference {(shipped - default).abs().max():.1e}"},
        ])

if __name__ == "__main__":
    main()
