"""Manage model folders: list | inspect DIR | verify DIR | pack DIR OUT.tar | unpack TAR | pull NAME.

A bundle is one tar holding a folder with the flow checkpoint, the encoder's weights (if any) and a
geoplonk.json manifest (name, training data, licence, sha256 of every file), so a model can be
carried to an air-gapped machine and checked there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from .common import CommandError, run_guarded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="models found on this machine")
    p = sub.add_parser("inspect", help="print a model's manifest, config and size")
    p.add_argument("dir")
    p = sub.add_parser("verify", help="recompute every file's sha256 against the manifest and load the weights")
    p.add_argument("dir")
    p = sub.add_parser("pack", help="bundle a model (and its encoder) into one tar")
    p.add_argument("dir")
    p.add_argument("out", type=Path)
    p.add_argument("--encoder-dir", type=Path, help="encoder weights folder to include (published PLONK models)")
    p.add_argument("--name", help="bundle name (default: the model's name)")
    p.add_argument("--licence", help="licence to record in the manifest")
    p.add_argument("--trained-on", help="training data to record in the manifest")
    p = sub.add_parser("unpack", help="extract a bundle into the models folder and verify it")
    p.add_argument("tar", type=Path)
    p.add_argument("--to", type=Path, help="destination folder (default: $GEOPLONK_MODELS or ~/.local/share/...)")
    p.add_argument("--force", action="store_true", help="replace an existing model of the same name")
    p = sub.add_parser("pull", help="download a published model from the Hugging Face hub (needs a network)")
    p.add_argument("name", help="e.g. nicolas-dufour/PLONK_YFCC")
    p.add_argument("--to", type=Path, help="destination folder (default: the models folder)")
    p.add_argument("--revision", default=None)


def _list(args) -> int:
    from model_server.engine.model import PACKAGE_MODELS, hf_cache_dir, user_models_dir

    rows = []
    for root, pattern in ((PACKAGE_MODELS, "*"), (user_models_dir(), "*"), (hf_cache_dir(), "models--*")):
        if root.is_dir():
            rows += [_describe(p) for p in sorted(root.glob(pattern)) if p.is_dir()]
    rows = [r for r in rows if r]
    if not rows:
        print("no models found; see `geoplonk models unpack` and `geoplonk models pull`")
    for r in rows:
        print(f"{r['name']:<32} {r['encoder']:<24} {r['size_mb']:>8.1f} MB  {r['path']}")
    return 0


def _describe(path: Path) -> dict | None:
    from model_server.engine.checkpoint import ModelNotFoundError, load_config, read_manifest, resolve_model_dir
    from model_server.engine.model import display_name, infer_encoder

    try:
        folder = resolve_model_dir(path)
        config = load_config(folder)
        manifest = read_manifest(folder) or {}
        try:
            encoder = infer_encoder(folder, manifest)[0]
        except ModelNotFoundError:
            encoder = "?"
    except ModelNotFoundError:
        return None
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"name": manifest.get("name") or display_name(folder), "encoder": encoder, "size_mb": size / 1e6,
            "path": str(folder), "config": config.to_dict(), "manifest": manifest}


def _inspect(args) -> int:
    from model_server.engine.checkpoint import load_flow, resolve_model_dir

    info = _describe(resolve_model_dir(args.dir))
    if info is None:
        raise CommandError(f"{args.dir} is not a model folder")
    net = load_flow(info["path"])
    info["parameters"] = sum(p.numel() for p in net.parameters())
    info["state_dict_entries"] = len(net.state_dict())
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0


def _verify(args) -> int:
    from model_server.engine.checkpoint import ModelNotFoundError, load_flow, verify_files

    problems = verify_files(args.dir)
    try:
        load_flow(args.dir)
    except ModelNotFoundError as exc:
        problems.append(f"weights do not load: {exc}")
    for p in problems:
        print(p)
    print("OK: every file matches its sha256" if not problems else f"FAILED: {len(problems)} problem(s)")
    return 0 if not problems else 1


def _pack(args) -> int:
    from model_server.engine.checkpoint import (
        CONFIG_FILE,
        MANIFEST_FILE,
        WEIGHTS_FILE,
        read_manifest,
        resolve_model_dir,
        write_manifest,
    )
    from model_server.engine.model import display_name, infer_encoder

    folder = resolve_model_dir(args.dir)
    manifest = dict(read_manifest(folder) or {})
    manifest.pop("files", None)
    enc_name, enc_dir = infer_encoder(folder, manifest)
    enc_dir = args.encoder_dir or enc_dir
    name = args.name or manifest.get("name") or display_name(folder).split("/")[-1]
    # keep the manifest's own encoder entry (its query views too); a published folder gets one from its name
    spec = manifest.get("encoder") or enc_name
    spec = {"name": spec} if isinstance(spec, str) else {k: v for k, v in spec.items() if k != "path"}
    manifest.update({"name": name, "encoder": {**spec, **({"path": "encoder"} if enc_dir else {})}})
    if args.licence:
        manifest["licence"] = args.licence
    if args.trained_on:
        manifest["trained_on"] = args.trained_on
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / name
        stage.mkdir()
        for f in folder.iterdir():  # the model's own files (HF snapshots hold symlinks: copy their targets)
            if f.name != MANIFEST_FILE and f.name != "encoder" and f.is_file():
                shutil.copyfile(f, stage / f.name)
        if enc_dir is not None:
            if not Path(enc_dir).is_dir():
                raise CommandError(f"encoder folder not found: {enc_dir}")
            shutil.copytree(enc_dir, stage / "encoder", symlinks=False)
        assert (stage / CONFIG_FILE).is_file() and (stage / WEIGHTS_FILE).is_file()
        write_manifest(stage, manifest)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_name(args.out.name + ".partial")
        with tarfile.open(partial, "w") as tar:
            tar.add(stage, arcname=name)
        partial.replace(args.out)
    print(f"packed {name} ({enc_name} encoder{' included' if enc_dir else ''}) into {args.out}")
    return 0


def _unpack(args) -> int:
    from model_server.engine.checkpoint import verify_files
    from model_server.engine.model import user_models_dir

    if not args.tar.is_file():
        raise CommandError(f"bundle not found: {args.tar}")
    dest_root = args.to or user_models_dir()
    dest_root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.tar) as tar:
        tops = {Path(m.name).parts[0] for m in tar.getmembers() if m.name not in ("", ".")}
        if len(tops) != 1:
            raise CommandError(f"{args.tar} is not a GeoPlonk bundle (expected one top folder, found {sorted(tops)})")
        name = tops.pop()
        target = dest_root / name
        if target.exists() and not args.force:
            raise CommandError(f"{target} already exists (use --force to replace it)")
        stage = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest_root))
        try:
            _safe_extract(tar, stage)
            problems = verify_files(stage / name)
            if problems:
                raise CommandError(f"bundle {args.tar} failed verification: " + "; ".join(problems))
            if target.exists():
                shutil.rmtree(target)
            os.replace(stage / name, target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    print(f"unpacked and verified {name} into {target}")
    return 0


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Regular files and folders only, all inside dest (tarfile's 'data' filter is missing before 3.11.4)."""
    root = dest.resolve()
    for member in tar.getmembers():
        path = (dest / member.name).resolve()
        if not (member.isfile() or member.isdir()) or root not in (path, *path.parents):
            raise CommandError(f"refusing bundle entry {member.name!r}: only plain files inside the bundle folder")
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
    else:
        tar.extractall(dest)


def _pull(args) -> int:
    from model_server.engine.checkpoint import read_manifest, write_manifest
    from model_server.engine.model import infer_encoder, user_models_dir

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise CommandError("HF_HUB_OFFLINE is set: `geoplonk models pull` needs the network. On an offline machine "
                           "copy the model folder in, or use `geoplonk models unpack BUNDLE.tar`.")
    from huggingface_hub import snapshot_download

    repo = args.name if "/" in args.name else f"nicolas-dufour/{args.name}"
    target = (args.to or user_models_dir()) / repo.split("/")[-1]
    try:
        snapshot_download(repo_id=repo, revision=args.revision, local_dir=target,
                          allow_patterns=["config.json", "model.safetensors", "*.md"])
    except Exception as exc:  # network, authentication, missing repository
        raise CommandError(f"could not download {repo}: {exc}") from None
    shutil.rmtree(target / ".cache", ignore_errors=True)
    manifest = read_manifest(target) or {"name": repo.split("/")[-1], "source": f"huggingface.co/{repo}"}
    manifest.pop("files", None)
    try:
        manifest.setdefault("encoder", {"name": infer_encoder(target, manifest)[0]})
    except FileNotFoundError:
        pass
    write_manifest(target, manifest)
    print(f"pulled {repo} into {target}")
    return 0


ACTIONS = {"list": _list, "inspect": _inspect, "verify": _verify, "pack": _pack, "unpack": _unpack, "pull": _pull}


def run(args: argparse.Namespace) -> int:
    from model_server.engine.checkpoint import ModelNotFoundError

    def guarded(a):
        try:
            return ACTIONS[a.action](a)
        except ModelNotFoundError as exc:
            raise CommandError(str(exc)) from None

    code = run_guarded(guarded, args)
    sys.stdout.flush()
    return code
