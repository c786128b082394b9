"""CURVE key pairs for a server reachable beyond loopback: what `geoplonk keys` writes and `geoplonk serve
--curve-keys DIR` reads (Server._setup_curve)."""

from __future__ import annotations

import shutil
from pathlib import Path


def make_keys(out: Path, clients: int = 1) -> dict[str, Path]:
    """server.key(+_secret), client-N.key(+_secret), and authorized_clients/ holding the clients' public keys."""
    import zmq.auth

    out.mkdir(parents=True, exist_ok=True)
    allowed = out / "authorized_clients"
    allowed.mkdir(exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(out), "server")
    paths = {"server_public": Path(public), "server_secret": Path(secret)}
    for i in range(1, clients + 1):
        c_public, c_secret = zmq.auth.create_certificates(str(out), f"client-{i}")
        shutil.copy2(c_public, allowed / Path(c_public).name)
        paths[f"client-{i}_public"] = Path(c_public)
        paths[f"client-{i}_secret"] = Path(c_secret)
    for path in out.glob("*.key_secret"):
        path.chmod(0o600)
    return paths
