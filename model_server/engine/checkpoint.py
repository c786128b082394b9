"""Model directories in the published PLONK format: `config.json` + `model.safetensors`,
plus our optional `geoplonk.json` manifest (name, encoder, licence, provenance, sha256 of files).

A directory may be a plain folder, a Hugging Face cache snapshot
(`models--owner--name/snapshots/<rev>/`) or the `models--owner--name` root. Loading never
touches the network; weights load with strict key matching so a wrong file fails loudly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .network import FlowConfig, GeoAdaLNMLP

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "geoplonk.json"
MANIFEST_FORMAT = "geoplonk-model/1"

HOW_TO_GET = (
    "Copy the model folder from a machine that has it (for the published PLONK models, the Hugging Face "
    "folder models--nicolas-dufour--PLONK_YFCC or its snapshots/<rev>/ subfolder), run "
    "`geoplonk models pull NAME` on a connected machine, or `geoplonk models unpack BUNDLE.tar` "
    "for a bundle made with `geoplonk models pack`."
)


class ModelNotFoundError(FileNotFoundError):
    """A model directory that is missing or lacks the published files; the message says how to get one."""


def _missing(path: Path, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"no usable model at {path}: {why}. {HOW_TO_GET}")


def _is_model_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def resolve_hf_folder(path: Path, required: str) -> Path | None:
    """The folder holding `required`: path itself, or in a Hugging Face cache root
    (`models--owner--name/`) the snapshot named by refs/main, else the newest snapshot."""
    if (path / required).is_file():
        return path
    snapshots = path / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = path / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip() / required).is_file():
        return snapshots / ref.read_text().strip()
    candidates = sorted(
        (p for p in snapshots.iterdir() if (p / required).is_file()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    return candidates[0] if candidates else None


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """Plain folder, HF snapshot folder, or HF `models--...` root -> the folder holding the files."""
    path = Path(path).expanduser()
    if not path.exists():
        raise _missing(path, "the folder does not exist")
    if not path.is_dir():
        raise _missing(path, "this is a file, not a folder")
    folder = resolve_hf_folder(path, WEIGHTS_FILE)
    if folder is not None and _is_model_dir(folder):
        return folder
    if (path / "snapshots").is_dir():
        raise _missing(path, f"no snapshot under {path / 'snapshots'} holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    present = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
    raise _missing(path, f"expected {CONFIG_FILE} and {WEIGHTS_FILE}, found {present}")


def load_config(model_dir: str | os.PathLike) -> FlowConfig:
    model_dir = resolve_model_dir(model_dir)
    try:
        return FlowConfig.from_dict(json.loads((model_dir / CONFIG_FILE).read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise _missing(model_dir, f"{CONFIG_FILE} is not a valid flow config ({exc})") from None


def read_manifest(model_dir: str | os.PathLike) -> dict | None:
    """The `geoplonk.json` manifest, or None for a published PLONK folder that has none."""
    path = resolve_model_dir(model_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def load_flow(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> GeoAdaLNMLP:
    """Build the network from config.json and load model.safetensors strictly, as fp32, in eval mode."""
    model_dir = resolve_model_dir(model_dir)
    net = GeoAdaLNMLP(load_config(model_dir))
    try:
        state = load_file(str(model_dir / WEIGHTS_FILE), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise _missing(model_dir, f"{WEIGHTS_FILE} cannot be read ({exc})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise _missing(model_dir, f"the weights do not match config.json ({exc})") from None
    return net.to(device).eval()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(root: str | os.PathLike, exclude: tuple[str, ...] = (MANIFEST_FILE,)) -> dict[str, str]:
    """sha256 of every file under root (POSIX relative paths), the manifest itself excluded."""
    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in exclude:
            out[rel] = file_sha256(path)
    return out


def write_manifest(model_dir: str | os.PathLike, manifest: dict | None = None) -> dict:
    """(Re)write geoplonk.json with the sha256 of every file in the folder; returns it."""
    model_dir = Path(model_dir)
    data = dict(manifest or {})
    data["format"] = MANIFEST_FORMAT
    data["files"] = hash_tree(model_dir)
    from geoplonk_service.output_files import atomic_write

    # a temporary name per writer; the manifest is as readable as the weights
    atomic_write(model_dir / MANIFEST_FILE, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), 0o644)
    return data


def verify_files(model_dir: str | os.PathLike) -> list[str]:
    """Problems found by recomputing the manifest's hashes (empty list = all good)."""
    model_dir = resolve_model_dir(model_dir)
    manifest = read_manifest(model_dir)
    if manifest is None or "files" not in manifest:
        return [f"{model_dir} has no {MANIFEST_FILE} with file hashes to verify against"]
    problems = []
    actual = hash_tree(model_dir)
    for rel, expected in sorted(manifest["files"].items()):
        if rel not in actual:
            problems.append(f"missing: {rel}")
        elif actual[rel] != expected:
            problems.append(f"changed: {rel} (sha256 {actual[rel][:12]}..., expected {expected[:12]}...)")
    problems += [f"not in manifest: {rel}" for rel in sorted(set(actual) - set(manifest["files"]))]
    return problems


def state_dict_for_saving(net: GeoAdaLNMLP, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Parameters cast to dtype; buffers (the `freqs` table) stay fp32 so they reload exactly."""
    params = {name for name, _ in net.named_parameters()}
    return {
        k: (v.detach().to(dtype) if k in params else v.detach()).cpu().contiguous()
        for k, v in net.state_dict().items()
    }


def save_model_dir(
    out_dir: str | os.PathLike,
    net: GeoAdaLNMLP,
    manifest: dict | None = None,
    dtype: torch.dtype = torch.float32,
    extra_files: dict[str, str | os.PathLike] | None = None,
) -> Path:
    """Write config.json, model.safetensors and geoplonk.json atomically (build aside, then swap).

    extra_files maps a relative destination (e.g. "encoder") to a file or folder to copy in,
    so a bundle's encoder is hashed into the manifest too.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model folder is meant to be shared
        (tmp / CONFIG_FILE).write_text(json.dumps(net.config.to_dict(), sort_keys=True) + "\n")
        save_file(state_dict_for_saving(net, dtype), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        for rel, src in (extra_files or {}).items():
            src = Path(src)
            if src.is_dir():
                shutil.copytree(src, tmp / rel)
            else:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, tmp / rel)
        data = dict(manifest or {})
        data.setdefault("weights_dtype", str(dtype).removeprefix("torch."))
        write_manifest(tmp, data)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
