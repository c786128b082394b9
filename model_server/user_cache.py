"""Where GeoPlonk keeps what it can rebuild (embeddings, the packed land mask): per user, in the XDG cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/geoplonk, else ~/.cache/geoplonk."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "geoplonk"
