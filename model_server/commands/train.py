"""Train a flow model on geotagged photos: `geoplonk train --data DATA --encoder NAME --out DIR`.

DATA is a folder of photos with EXIF GPS or a CSV (path, latitude, longitude). Embeddings are
cached; training state is saved every --state-every steps next to DIR so --resume continues.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, action="append",
                        help="folder of geotagged photos, or CSV; repeat to train on several, in that order")
    parser.add_argument("--encoder", default="efficientnet-lite0",
                        help="efficientnet-lite0 | streetclip | dinov2-reg; NAME+rot4 / NAME+d8 averages each "
                             "photo's views, training photos included")
    parser.add_argument("--query-views", choices=("rot4", "d8"), default=None,
                        help="photos to locate are embedded as the mean over these views (rot4: quarter turns, "
                             "d8: and mirror images); for overhead imagery, whose orientation is arbitrary. "
                             "Training photos go through --encoder, its own +VIEWS included")
    parser.add_argument("--encoder-dir", default=None, help="encoder weights folder (transformers encoders)")
    parser.add_argument("--out", required=True, type=Path, help="model directory to write")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--embedding-noise", type=float, default=0.0,
                        help="std of Gaussian noise added to standardised embeddings (regularises small datasets)")
    parser.add_argument("--cond-rank", type=int, default=0,
                        help="condition on the top K principal components of the embeddings (0: all); "
                             "folded back, so the saved model still takes raw embeddings")
    parser.add_argument("--target-jitter-km", type=float, default=0.0,
                        help="random step (std, km) on each training location: labels as places, not points")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--optimizer", choices=("adamw", "lamb"), default="adamw")
    parser.add_argument("--land-weight", type=float, default=1.0,
                        help="draw photos taken on land (global-land-mask at their location) this many times as "
                             "often as photos at sea")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                        help="autocast for the matmuls; bf16 runs as fp32 on a CPU without bf16 units, where it would "
                             "be emulated (the manifest records which ran)")
    parser.add_argument("--weights-dtype", choices=("fp32", "fp16"), default="fp32", help="saved weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue from a training state file (default: DIR.train-state.pt)")
    parser.add_argument("--state-every", type=int, default=500)
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache (.npz)")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N photos only (of all --data, in order)")
    parser.add_argument("--name", default=None, help="model name in the manifest (default: DIR's name)")
    parser.add_argument("--description", default=None, help="what the training data is (manifest)")
    parser.add_argument("--licence", default=None, help="licence of the weights/data (manifest)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for training (and embedding)")
    parser.add_argument("--embed-threads", type=int, default=None,
                        help="CPU threads for embedding the photos (default: --threads), so that a one-thread "
                             "training, reproducible bit for bit, can still embed on every core")
    parser.add_argument("--quiet", action="store_true")


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".train-state.pt")


def _save_state(path: Path, state: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    import json

    import torch
    from tqdm import tqdm

    from model_server import __version__
    from model_server.engine.checkpoint import save_model_dir
    from model_server.engine.datasets import embed_dataset, read_datasets, targets_xyz
    from model_server.engine.encoders import load_encoder
    from model_server.engine.network import FlowConfig
    from model_server.engine.sampling import supported_precision
    from model_server.engine.training import Timer, TrainConfig, train_flow

    timer = Timer()
    training_threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.embed_threads or training_threads)
    dataset = read_datasets(args.data, progress=not args.quiet)
    if args.limit:
        dataset = dataset.subset(list(range(min(args.limit, len(dataset)))))
    encoder = load_encoder(args.encoder, args.encoder_dir)
    emb, dataset = embed_dataset(dataset, encoder, cache_path=args.cache, progress=not args.quiet)
    encode_s = timer.elapsed()
    torch.set_num_threads(training_threads)
    sources = " + ".join(map(str, args.data))
    print(f"{len(dataset)} geotagged photos from {sources}, embeddings {tuple(emb.shape)} "
          f"({encode_s:.0f} s)", file=sys.stderr)

    precision = supported_precision(args.precision, "cpu")
    if precision != args.precision:
        print(f"bf16 is not native on this CPU: training in {precision}, since emulated bf16 is slower",
              file=sys.stderr)
    flow_config = FlowConfig(cond_dim=encoder.dim, dim=args.dim, depth=args.depth)
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                               weight_decay=args.weight_decay, warmup=args.warmup, ema_decay=args.ema_decay,
                               embedding_noise=args.embedding_noise, cond_rank=args.cond_rank,
                               target_jitter_km=args.target_jitter_km,
                               precision=precision, land_weight=args.land_weight, seed=args.seed)
    spath = state_path(args.out)
    resume, precision_note = None, None
    if args.resume is not None:
        rpath = spath if args.resume == "auto" else Path(args.resume)
        if rpath.is_file():
            resume = torch.load(rpath, weights_only=False)
            print(f"resuming from {rpath} at step {resume['step']}", file=sys.stderr)
            earlier = resume.get("train_config", {}).get("precision", precision)
            if earlier != precision:
                precision_note = f"steps up to {resume['step']} trained in {earlier}"
        else:
            print(f"no training state at {rpath}; starting from scratch", file=sys.stderr)

    bar = tqdm(total=args.steps, initial=resume["step"] if resume else 0, desc="training", disable=args.quiet,
               mininterval=5, file=sys.stderr)
    smooth: list[float] = []

    def on_step(step: int, total: int, loss: float) -> None:
        smooth.append(loss if not smooth else 0.98 * smooth[-1] + 0.02 * loss)
        bar.update(1)
        bar.set_postfix(loss=f"{smooth[-1]:.4f}", refresh=False)
        if args.quiet and step % 500 == 0:
            print(f"step {step}/{total} loss {smooth[-1]:.4f} ({timer.elapsed():.0f} s)", file=sys.stderr)

    train_timer = Timer()
    # a resumed run counts the interrupted runs' training time too: the manifest names the whole training's cost
    earlier_s = float(resume.get("training_seconds", 0.0)) if resume else 0.0
    # steps whose time no state counted (a state saved before the counter); carried through later resumes
    uncounted = 0 if resume is None else (
        resume.get("uncounted_steps", 0) if "training_seconds" in resume else int(resume["step"]))
    if uncounted:
        print(f"the training state does not say how long its first {uncounted} steps took: the manifest's "
              "training_seconds leaves them out", file=sys.stderr)

    def save_state(state: dict) -> None:
        _save_state(spath, {**state, "training_seconds": earlier_s + train_timer.elapsed(),
                            "uncounted_steps": uncounted})

    on_land = None
    if args.land_weight != 1.0:
        from model_server.products.place_names import is_land

        on_land = torch.from_numpy(is_land(dataset.latlon[:, 0], dataset.latlon[:, 1]))
    net = train_flow(emb, targets_xyz(dataset.latlon), flow_config, train_config, on_land=on_land,
                     on_step=on_step, resume=resume,
                     on_state=save_state, state_every=args.state_every)
    bar.close()
    manifest = {
        "name": args.name or args.out.name,
        "encoder": {"name": encoder.name, **({"views": args.query_views} if args.query_views else {})},
        "training_data": args.description or f"{len(dataset)} geotagged photos from {sources}",
        "licence": args.licence or "unspecified (the training data's terms apply)",
        "provenance": {
            "command": "geoplonk " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "geoplonk_version": __version__,
            "torch_version": torch.__version__,
            "n_images": len(dataset),
            "train_config": train_config.to_dict(),
            "flow_config": flow_config.to_dict(),
            "final_loss": smooth[-1] if smooth else None,
            "embedding_seconds": round(encode_s, 1),
            "training_seconds": round(earlier_s + train_timer.elapsed(), 1),
            **({"resumed_at_step": int(resume["step"])} if resume else {}),
            **({"training_seconds_note": f"the first {uncounted} steps not counted"} if uncounted else {}),
            **({"precision_note": precision_note} if precision_note else {}),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "embeddings": "raw encoder output; the training input map (standardisation) folded into cond_mapper",
        },
    }
    dtype = torch.float16 if args.weights_dtype == "fp16" else torch.float32
    save_model_dir(args.out, net, manifest, dtype=dtype)
    print(json.dumps({"out": str(args.out), "steps": args.steps, "final_loss": manifest["provenance"]["final_loss"],
                      "training_seconds": manifest["provenance"]["training_seconds"]}))
    return 0
