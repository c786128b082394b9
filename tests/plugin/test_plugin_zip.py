"""The plugin zip: the layout QGIS's "Install from ZIP" expects, and it imports as the package `geoplonk`."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_zip_layout_and_import_as_geoplonk(tmp_path, qgis_iface, monkeypatch):
    out = tmp_path / "geoplonk.zip"
    subprocess.run(["/usr/bin/python3", str(ROOT / "scripts/build_plugin_zip.py"), "--out", str(out)], check=True)
    names = zipfile.ZipFile(out).namelist()
    assert all(n.startswith("geoplonk/") for n in names)
    for needed in ("metadata.txt", "icon.svg", "__init__.py", "plugin.py", "task.py", "layers.py",
                   "libs/geoplonk_service/protocol.py", "libs/geoplonk_service/client.py",
                   "libs/geoplonk_service/launcher.py", "libs/geoplonk_service/output_files.py",
                   "libs/geoplonk_service/photos.py", "libs/geoplonk_service/result_rows.py",
                   "libs/geoplonk_service/server_manager.py",
                   "processing/provider.py"):
        assert f"geoplonk/{needed}" in names
    assert not [n for n in names if "__pycache__" in n or "/tests/" in n or n.endswith(".pyc")]

    # A second build gives the same bytes (reproducible releases).
    again = tmp_path / "again.zip"
    subprocess.run(["/usr/bin/python3", str(ROOT / "scripts/build_plugin_zip.py"), "--out", str(again)], check=True)
    assert again.read_bytes() == out.read_bytes()

    plugins = tmp_path / "plugins"
    zipfile.ZipFile(out).extractall(plugins)
    monkeypatch.syspath_prepend(str(plugins))
    package = importlib.import_module("geoplonk")
    instance = package.classFactory(qgis_iface)
    instance.initGui()
    try:
        assert instance.action_geolocate.text() == "Geolocate photos"
        assert instance.action_geolocate.toolTip() == "Geolocate selected photos"
        assert type(instance).__module__ == "geoplonk.plugin"
    finally:
        instance.unload()
        for name in [m for m in sys.modules if m == "geoplonk" or m.startswith("geoplonk.")]:
            del sys.modules[name]
