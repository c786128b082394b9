"""Plugin tests: real headless QGIS (pytest-qgis) and a real `geoplonk serve` started with the launcher.

pytest-qgis starts QGIS before any conftest is imported, so headless mode comes from the
environment/command line (the Makefile passes `-o qgis_gui_enabled=false`; QT_QPA_PLATFORM=offscreen
is required either way).  The server command comes from $GEOPLONK_SERVER_COMMAND; a test model
directory, if any, from $GEOPLONK_TEST_MODEL.
"""

from __future__ import annotations

import gc
import os
import shlex
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# QGIS and Qt write caches into $HOME: keep them in a temporary folder (effective for anything started later).
_XDG = Path(tempfile.mkdtemp(prefix="geoplonk-plugin-tests-"))
for _var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
    os.environ.setdefault(_var, str(_XDG / _var.lower()))
os.environ.setdefault("XDG_RUNTIME_DIR", str(_XDG / "runtime"))
Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)

DEFAULT_SERVER_COMMAND = f"{ROOT / '.venv/server/bin/geoplonk'} serve"
# Small and fast: these tests check the plumbing, not the model.
FAST_OPTIONS = {"samples": 64, "steps": 4, "resolution": 2.0}


def server_command() -> str:
    """The command that starts a server: the committed default model, or $GEOPLONK_TEST_MODEL when set."""
    command = os.environ.get("GEOPLONK_SERVER_COMMAND", DEFAULT_SERVER_COMMAND)
    model = os.environ.get("GEOPLONK_TEST_MODEL")
    if model:
        command += " --model " + shlex.quote(model)
    return command


@pytest.fixture(autouse=True, scope="session")
def collect_garbage_while_qgis_lives(qgis_app):  # noqa: ARG001 - set up after QGIS, so torn down before exitQgis
    """Free unreachable QGIS objects (layers in reference cycles) while QGIS still runs: pytest's own final
    garbage collection comes after exitQgis(), where destroying a layer segfaults the process."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def geoplonk_server(qgis_app):  # noqa: ARG001 - QGIS first, so the server's pid watch sees this process
    """A real local server for the whole session (stopped at the end)."""
    from geoplonk_service.launcher import start_local_server

    server = start_local_server(server_command(), ready_timeout=300)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def main_window_shown(qgis_iface, qgis_parent, qgis_canvas):
    """Show the main window and canvas: a never-shown canvas renders at 98x28."""
    qgis_parent.resize(900, 600)
    qgis_parent.setCentralWidget(qgis_canvas)
    qgis_parent.show()
    qgis_canvas.show()
    return qgis_iface


def _make_photo(path: Path, hue: int, size=(320, 240)) -> Path:
    """A real image file (Qt's writers): a colour gradient with some structure."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtGui import QColor, QImage, QPainter

    img = QImage(size[0], size[1], QImage.Format_RGB32)
    img.fill(QColor.fromHsv(hue % 360, 120, 200))
    painter = QPainter(img)
    painter.setPen(Qt.NoPen)
    for i in range(12):
        painter.setBrush(QColor.fromHsv((hue + 25 * i) % 360, 200, 80 + 12 * i))
        painter.drawEllipse(20 * i, (37 * i) % size[1], 60, 40)
    painter.end()
    fmt = path.suffix.lstrip(".").upper().replace("JPG", "JPEG")
    assert img.save(str(path), fmt), f"Qt cannot write {fmt}"
    return path


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """A folder of small photos in several formats."""
    folder = tmp_path_factory.mktemp("photos")
    _make_photo(folder / "harbour.jpg", 200)
    _make_photo(folder / "desert road.png", 35)
    _make_photo(folder / "forest.tif", 120)
    return folder


@pytest.fixture
def photos(photo_dir) -> list[str]:
    return [str(photo_dir / "harbour.jpg"), str(photo_dir / "desert road.png")]


@pytest.fixture
def plugin_settings(geoplonk_server, tmp_path):
    """Settings pointing at the session server, saved to QgsSettings; restored afterwards."""
    from qgis_plugin.settings import Settings

    before = Settings.load()
    settings = Settings(
        endpoint=geoplonk_server.endpoint,
        auto_start=False,
        output_folder=str(tmp_path / "results"),
        **FAST_OPTIONS,
    )
    settings.save()
    yield settings
    before.save()


@pytest.fixture
def plugin(main_window_shown, qgis_new_project):  # noqa: ARG001 - a fresh project per test
    """The plugin as QGIS loads it (classFactory, initGui), unloaded after the test."""
    import qgis_plugin

    plug = qgis_plugin.classFactory(main_window_shown)
    plug.initGui()
    plug.choose_files = lambda: pytest.fail("the file dialog was opened unexpectedly")
    plug.choose_folder = lambda: pytest.fail("the folder dialog was opened unexpectedly")
    plug.choose_field = lambda names: pytest.fail(f"the field prompt was opened unexpectedly: {names}")
    yield plug
    plug.unload()


@pytest.fixture(scope="session")
def geoplonk_server_command() -> str:
    return server_command()


@pytest.fixture
def wait_for_task(qtbot):
    """wait(plugin) -> TaskReport: waits for jobDone and lets queued photo results land."""

    def wait(plug, timeout_s: float = 240):
        qtbot.waitUntil(lambda: plug.last_report is not None, timeout=int(timeout_s * 1000))
        qtbot.wait(50)
        return plug.last_report

    return wait
