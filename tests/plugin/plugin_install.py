"""Install the built plugin zip into a fresh QGIS profile, for the out-of-process tests.

Used by the `qgis_process` test and the desktop test: both run QGIS as a separate
program that finds the plugin only where a user would have it, in a profile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


def build_plugin_zip(out: Path) -> Path:
    """Build the plugin zip with the project's builder (the same as `make plugin`) at `out`."""
    subprocess.run(
        [SYSTEM_PYTHON, str(ROOT / "scripts" / "build_plugin_zip.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


def make_profile(profiles_root: Path, plugin_zip: Path, settings: dict[str, str] | None = None) -> Path:
    """A `default` profile under `profiles_root` with the plugin unzipped, enabled and configured.

    `settings` become the [geoplonk] section of QGIS3.ini (QgsSettings keys "geoplonk/<name>").
    Returns the profile folder.
    """
    profile = profiles_root / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    if plugins.exists():
        shutil.rmtree(plugins)
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(plugin_zip) as zf:
        zf.extractall(plugins)
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[PythonPlugins]", "geoplonk=true", ""]
    if settings:
        lines += ["[geoplonk]", *(f"{k}={v}" for k, v in settings.items()), ""]
    # No first-run dialogs or news feed popping up over the canvas.
    lines += ["[qgis]", "showTips=false", "checkVersion=false", "allowVersionCheck=false", ""]
    ini.write_text("\n".join(lines), encoding="utf-8")
    return profile


def qgis_env(home: Path) -> dict[str, str]:
    """Environment for a QGIS child process: HOME and XDG folders in `home`, never the user's."""
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        env[var] = str(home / var.lower())
    env["XDG_RUNTIME_DIR"] = str(home / "runtime")
    env["HOME"] = str(home)
    (home / "runtime").mkdir(mode=0o700, parents=True, exist_ok=True)
    env.pop("PYTHONPATH", None)  # QGIS finds the plugin in the profile, not in the repository
    return env


def qgis_process_command() -> list[str]:
    """The qgis_process program.

    Debian's /usr/bin/qgis_process wrapper adds $QGIS_OPTS from /etc/default/qgis, which the
    `qgis` package sets to --noversioncheck, an option qgis_process rejects; the real binary
    beside it takes the same arguments without the wrapper's addition.
    """
    for candidate in ("/usr/bin/qgis_process.bin", shutil.which("qgis_process.bin"), shutil.which("qgis_process")):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    raise FileNotFoundError("qgis_process is not installed (apt-get install qgis)")
