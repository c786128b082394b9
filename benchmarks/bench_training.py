"""Training speed of the default model's flow head (dim 256, depth 6, cond 1280, batch 256), random data.

Prints milliseconds per optimiser step (after a warm-up) for the shipped loop (bf16 autocast, fused AdamW,
one multi-tensor EMA update) against the same loop with per-tensor AdamW and EMA updates (this project's
loop before 2026-12-04) and against fp32 with per-tensor updates (the reference's training step), in one run.
Run: .venv/server/bin/python benchmarks/bench_training.py [--threads 1,2] [--steps 300] [--record PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import model_server.engine.training as training  # noqa: E402
from model_server.engine.network import FlowConfig  # noqa: E402

SHIPPED_OPTIMIZER, SHIPPED_EMA = training.make_optimizer, training.ema_update


def per_tensor_optimizer(net: torch.nn.Module, cfg: training.TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99),
                             foreach=False)


@torch.no_grad()
def per_tensor_ema(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), net.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)


VARIANTS = {
    "shipped (bf16, fused AdamW, multi-tensor EMA)": ("bf16", SHIPPED_OPTIMIZER, SHIPPED_EMA),
    "bf16, per-tensor AdamW and EMA": ("bf16", per_tensor_optimizer, per_tensor_ema),
    "fp32, per-tensor AdamW and EMA (the reference's step)": ("fp32", per_tensor_optimizer, per_tensor_ema),
}


def ms_per_step(threads: int, steps: int, warmup: int, precision: str) -> float:
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(20000, 1280, generator=gen)
    targets = torch.randn(20000, 3, generator=gen)
    stamps: list[float] = []
    training.train_flow(emb, targets, FlowConfig(cond_dim=1280, dim=256, depth=6), steps=warmup + steps,
                        batch_size=256, precision=precision, threads=threads,
                        on_step=lambda step, total, loss: stamps.append(time.perf_counter()))
    return 1000 * (stamps[-1] - stamps[warmup - 1]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--record", metavar="PATH",
                        help="also write the figures as JSON (a file, or a folder: benchmarks/results/); "
                             "then run benchmarks/render_doc.py")
    args = parser.parse_args()
    figures = []
    print(f"torch {torch.__version__}, {args.steps} timed steps after {args.warmup} warm-up, batch 256")
    for threads in (int(t) for t in args.threads.split(",")):
        base = None
        for name, (precision, optimizer, ema) in VARIANTS.items():
            training.make_optimizer, training.ema_update = optimizer, ema
            try:
                ms = ms_per_step(threads, args.steps, args.warmup, precision)
            finally:
                training.make_optimizer, training.ema_update = SHIPPED_OPTIMIZER, SHIPPED_EMA
            base = base or ms
            print(f"threads {threads}: {name}: {ms:.1f} ms/step ({ms / base:.2f}x the shipped time); "
                  f"80,000 steps: {80000 * ms / 60000:.0f} min", flush=True)
            figures.append({"what": f"{threads} thread{'s' if threads > 1 else ''}: {name}", "value": round(ms, 1),
                            "unit": "ms/step", "compare": f"{ms / base:.2f}x the shipped time"})
    if args.record:
        from render_doc import write_record

        write_record(args.record, "bench_training", "One training step of the default model's head", figures,
                     notes=[f"{args.steps} timed steps after {args.warmup} warm-up steps, batch 256."])


if __name__ == "__main__":
    main()
