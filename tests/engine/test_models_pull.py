"""`geoplonk models pull` end to end against a local stand-in of the Hugging Face hub (127.0.0.1 only).

The stand-in serves just what huggingface_hub's snapshot_download asks for: the repo info
(`/api/models/{repo}/revision/{rev}`), the file tree (`/api/models/{repo}/tree/{sha}`) and
HEAD/GET `/{repo}/resolve/{sha}/{file}` with the X-Repo-Commit, ETag and Content-Length headers.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from model_server.engine.checkpoint import load_flow, read_manifest, save_model_dir
from model_server.engine.network import FlowConfig, GeoAdaLNMLP

from .test_checkpoint import same_weights
from .test_oracle import randomise

ROOT = Path(__file__).resolve().parents[2]
REPO = "nicolas-dufour/PLONK_YFCC"
SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(ThreadingHTTPServer):
    """Serves one model repo's files; records every request so the test can see what the client asked."""

    daemon_threads = True

    def __init__(self, repo: str, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.repo, self.files, self.requests = repo, files, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub, path = self.server, unquote(urlsplit(self.path).path)
        hub.requests.append(f"{self.command} {path}")
        api = f"/api/models/{hub.repo}"
        if path in (api, f"{api}/revision/main", f"{api}/revision/{SHA}"):
            siblings = [{"rfilename": name} for name in hub.files]
            return self._send(json.dumps({"id": hub.repo, "sha": SHA, "siblings": siblings}).encode(), body)
        if path in (f"{api}/tree/{SHA}", f"{api}/tree/main"):
            tree = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in hub.files.items()]
            return self._send(json.dumps(tree).encode(), body)
        for rev in ("main", SHA):
            prefix = f"/{hub.repo}/resolve/{rev}/"
            if path.startswith(prefix) and path[len(prefix):] in hub.files:
                data = hub.files[path[len(prefix):]]
                return self._send(data, body, {"ETag": f'"{hashlib.sha256(data).hexdigest()}"'},
                                  "application/octet-stream")
        self.send_response(404)
        self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("X-Repo-Commit", SHA)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, data: bytes, body: bool, extra: dict | None = None, ctype: str = "application/json") -> None:
        self.send_response(200)
        for key, value in {"Content-Type": ctype, "Content-Length": str(len(data)), "X-Repo-Commit": SHA,
                           **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


@pytest.fixture
def served(tmp_path):
    """A tiny published-style repo (config.json + model.safetensors + README, plus a file pull must skip)."""
    net = GeoAdaLNMLP(FlowConfig(cond_dim=16, dim=32, depth=2))
    randomise(net, 3)
    folder = save_model_dir(tmp_path / "upstream", net.eval())
    files = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}
    files["README.md"] = b"# PLONK_YFCC (test stand-in)\n"
    files["optimizer.pt"] = b"\0" * 64
    hub = FakeHub(REPO, files)
    thread = threading.Thread(target=hub.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub, net
    finally:
        hub.shutdown()
        hub.server_close()
        thread.join(timeout=5)


def geoplonk(*args, home: Path, endpoint: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(home),
           "GEOPLONK_MODELS": str(home / "models"), "HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hub"),
           "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run([sys.executable, "-m", "model_server.cli", "models", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)


def test_pull_downloads_loads_and_verifies(served, tmp_path):
    hub, net = served
    r = geoplonk("pull", "PLONK_YFCC", home=tmp_path, endpoint=hub.url)
    assert r.returncode == 0, (r.stdout, r.stderr, hub.requests)
    target = tmp_path / "models" / "PLONK_YFCC"
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "config.json", "geoplonk.json",
                                                         "model.safetensors"]
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (target / name).read_bytes() == hub.files[name]
    assert not any(req.endswith("optimizer.pt") for req in hub.requests)
    assert same_weights(load_flow(target), net)
    manifest = read_manifest(target)
    assert manifest["encoder"] == {"name": "dinov2-reg"} and manifest["source"] == f"huggingface.co/{REPO}"
    assert sorted(manifest["files"]) == ["README.md", "config.json", "model.safetensors"]
    v = geoplonk("verify", target, home=tmp_path, endpoint=hub.url)
    assert v.returncode == 0 and "OK" in v.stdout, (v.stdout, v.stderr)
    again = geoplonk("pull", REPO, home=tmp_path, endpoint=hub.url)  # pulling over an existing copy stays valid
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert read_manifest(target)["files"] == manifest["files"] and same_weights(load_flow(target), net)


def test_pull_missing_repo_is_a_clean_error(served, tmp_path):
    hub, _ = served
    r = geoplonk("pull", "someone/NOT_THERE", home=tmp_path, endpoint=hub.url)
    assert r.returncode == 2 and "could not download someone/NOT_THERE" in r.stderr, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and not (tmp_path / "models" / "NOT_THERE" / "geoplonk.json").exists()
