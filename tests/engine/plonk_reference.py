"""Load the authors' code (PyPI `diff-plonk` 0.4, installed with --no-deps) as a numerical oracle.

Its package __init__ imports the pipeline, which imports torchvision; torchvision does not install
beside our torch. So we register bare parent packages pointing at the installed folders, and a
torchvision stand-in that only the pipeline's image transforms (unused here) would touch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path


def plonk_root() -> Path | None:
    """The installed `plonk` folder, found without importing it."""
    existing = sys.modules.get("plonk")
    if existing is not None and getattr(existing, "__path__", None):
        return Path(list(existing.__path__)[0])
    spec = importlib.util.find_spec("plonk")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _package(name: str, path: Path) -> None:
    if name not in sys.modules or not hasattr(sys.modules[name], "__path__"):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module


def _import_with_torchvision_standin(name: str):
    """Import with a throw-away torchvision in sys.modules, removed again at once so that
    transformers (imported first, for real) keeps seeing that torchvision is absent."""
    import transformers  # noqa: F401  (its import-time availability checks must not see the stand-in)

    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
    names = {"torchvision": tv, "torchvision.transforms": tv.transforms,
             "torchvision.transforms.functional": tv.transforms.functional}
    sys.modules.update(names)
    try:
        return importlib.import_module(name)
    finally:
        for key in names:
            sys.modules.pop(key, None)


def load(module: str):
    """Import plonk.<module> without running plonk/__init__.py (e.g. "models.networks.mlp")."""
    root = plonk_root()
    if root is None:
        raise ImportError("diff-plonk is not installed: pip install --no-deps diff-plonk==0.4")
    _package("plonk", root)
    for sub in ("models", "models.networks", "models.samplers", "utils", "data", "metrics"):
        _package(f"plonk.{sub}", root / sub.replace(".", "/"))
    if module == "pipe":
        return _import_with_torchvision_standin("plonk.pipe")
    return importlib.import_module(f"plonk.{module}")
