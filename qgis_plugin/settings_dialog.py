"""The settings dialog: a plain form over Settings, plus "Test connection" (shows the server's info).

"Test connection" runs in a background thread (a start command may take minutes, or never answer): the
dialog stays responsive, says what it is doing, and its Cancel button stops waiting.  The server's answer
fills the model picker, each model with its one-line card (what it is for, its encoder, its licence).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from geoplonk_service import protocol as P

from . import messages
from .settings import SOLVER_HELP, Settings, parse_levels, solver_label
from .translation import tr

# The guidance box's bottom value, one step below the protocol's least cfg: "the model's calibrated".
GUIDANCE_MODEL_DEFAULT = P.CFG.minimum - 0.1


class SettingsDialog(QDialog):
    """Edit a Settings copy; `settings()` returns the edited values (the caller saves them)."""

    def __init__(self, settings: Settings, parent: QWidget | None, connect: Callable[[Settings], Any]):
        """`connect(settings)` returns a client to a server that answers (the plugin's, which may start one)."""
        super().__init__(parent)
        self.setWindowTitle(tr("GeoPlonk settings"))
        self.setObjectName("GeoPlonkSettingsDialog")
        self._connect = connect
        self._base = settings
        form = QFormLayout()

        self.endpoint = QLineEdit(settings.endpoint)
        self.endpoint.setToolTip(f"ZeroMQ address of a running `geoplonk serve`, e.g. {P.DEFAULT_ENDPOINT}")
        form.addRow(tr("Server endpoint"), self.endpoint)
        self.start_command = QLineEdit(settings.start_command)
        self.start_command.setToolTip(
            "Command that starts a local server when none answers,"
            " e.g. /home/me/geoplonk/.venv/server/bin/geoplonk serve"
        )
        form.addRow(tr("Start command"), self.start_command)
        self.auto_start = QCheckBox(tr("Start a local server automatically when none answers"))
        self.auto_start.setChecked(settings.auto_start)
        form.addRow("", self.auto_start)
        self.model = QComboBox()
        self.model.setEditable(True)  # a model the server will have; the list comes from "Test connection"
        self.model.setObjectName("geoplonkModel")
        self.model.addItem(tr("server default"), "")
        if settings.model:
            self.model.addItem(settings.model, settings.model)
            self.model.setCurrentIndex(1)
        self.model.currentIndexChanged.connect(self._show_card)
        self.model_card = QLabel(tr("Press Test connection to list the server's models."))
        self.model_card.setWordWrap(True)
        self.model_card.setObjectName("geoplonkModelCard")
        self._cards: dict[str, dict] = {}
        form.addRow(tr("Model"), self.model)
        form.addRow("", self.model_card)
        self.samples = QSpinBox()
        self.samples.setRange(P.SAMPLES.minimum, P.SAMPLES.maximum)
        self.samples.setValue(settings.samples)
        form.addRow(tr("Samples"), self.samples)
        self.solver = QComboBox()
        self.solver.setObjectName("geoplonkSolver")
        for name in P.SOLVERS:
            self.solver.addItem(solver_label(name), name)
        index = self.solver.findData(settings.solver)
        self.solver.setCurrentIndex(index if index >= 0 else P.SOLVERS.index(P.DEFAULT_SOLVER))
        self.solver.setToolTip(SOLVER_HELP)
        self.steps = QSpinBox()
        self.steps.setRange(P.STEPS.minimum, P.STEPS.maximum)
        self.steps.setValue(settings.steps)
        self.steps.setSuffix(tr(" steps"))
        solver_row = QHBoxLayout()  # a solver and its steps go together
        solver_row.addWidget(self.solver)
        solver_row.addWidget(self.steps)
        form.addRow(tr("Solver"), solver_row)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(GUIDANCE_MODEL_DEFAULT, P.CFG.maximum)
        self.guidance.setSingleStep(0.1)
        self.guidance.setSpecialValueText("model's calibrated")  # shown at the minimum: send no cfg
        self.guidance.setValue(GUIDANCE_MODEL_DEFAULT if settings.cfg is None else settings.cfg)
        self.guidance.setToolTip(
            "Guidance w of the distribution drawn on the map: below 0 wider, above 0 sharper than the model."
            " At the bottom of the range, the model's own calibrated value (geoplonk calibrate)."
        )
        form.addRow(tr("Guidance (cfg)"), self.guidance)
        self.resolution = QDoubleSpinBox()
        self.resolution.setDecimals(3)
        self.resolution.setRange(P.RESOLUTION.minimum, P.RESOLUTION.maximum)
        self.resolution.setSingleStep(0.05)
        self.resolution.setSuffix(" °")
        self.resolution.setValue(settings.resolution)
        form.addRow(tr("Raster resolution"), self.resolution)
        self.levels = QLineEdit(", ".join(f"{v * 100:g}" for v in settings.levels))
        self.levels.setToolTip("Credible region levels in percent, comma separated")
        form.addRow(tr("Credible levels (%)"), self.levels)
        self.output_folder = QLineEdit(settings.output_folder)
        self.output_folder.setPlaceholderText(tr("the project's folder, else ~/GeoPlonk/results"))
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.output_folder)
        row.addWidget(browse)
        form.addRow(tr("Output folder"), row)

        self.test_button = QPushButton(tr("Test connection"))
        self.test_button.setObjectName("geoplonkTestConnection")
        self.test_button.clicked.connect(self.start_test)
        self.cancel_test_button = QPushButton(tr("Cancel test"))
        self.cancel_test_button.setObjectName("geoplonkCancelTest")
        self.cancel_test_button.setEnabled(False)
        self.cancel_test_button.clicked.connect(self.cancel_test)
        self._test: dict | None = None  # the running test: {"thread", "result", "started", "cancelled"}
        self._poll = QTimer(self)
        self._poll.setInterval(100)
        self._poll.timeout.connect(self._poll_test)
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextSelectableByMouse)

        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #b00020")

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.cancel_test_button)
        layout.addLayout(test_row)
        layout.addWidget(self.info_label)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

    def settings(self) -> Settings:
        """The edited settings; raises ValueError when the levels do not parse."""
        return replace(
            self._base,
            endpoint=self.endpoint.text().strip(),
            start_command=self.start_command.text().strip(),
            auto_start=self.auto_start.isChecked(),
            model=self.selected_model(),
            samples=self.samples.value(),
            solver=str(self.solver.currentData()),
            steps=self.steps.value(),
            cfg=None if self.guidance.value() < P.CFG.minimum else self.guidance.value(),
            resolution=self.resolution.value(),
            levels=parse_levels(self.levels.text()),
            output_folder=self.output_folder.text().strip(),
        )

    def _accept(self) -> None:
        try:
            self.settings()
        except ValueError as exc:
            self.error_label.setText(str(exc))
            return
        self.accept()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.output_folder.text())
        if folder:
            self.output_folder.setText(folder)

    def selected_model(self) -> str:
        """The picked model's name ('' = the server's default); a typed name is taken as is."""
        text = self.model.currentText().strip()
        index = self.model.findText(text)
        if index >= 0:
            return str(self.model.itemData(index) or "")
        return "" if text == tr("server default") else text

    # -- Test connection, in the background ---------------------------------------------------------

    def start_test(self) -> bool:
        """Ask the server for `info` in a background thread (starting a local one if allowed); False if one runs."""
        if self._test is not None:
            return False
        try:
            settings = self.settings()
        except ValueError as exc:
            self.info_label.setText(str(exc))
            return False
        test = {"result": None, "started": time.monotonic(), "cancelled": False, "endpoint": settings.endpoint}

        def work() -> None:
            test["result"] = self._ask_info(settings)

        test["thread"] = threading.Thread(target=work, name="geoplonk-test-connection", daemon=True)
        self._test = test
        self.test_button.setEnabled(False)
        self.cancel_test_button.setEnabled(True)
        self.info_label.setText(tr("Connecting to the GeoPlonk server…"))
        test["thread"].start()
        self._poll.start()
        return True

    def cancel_test(self) -> None:
        """Stop waiting for the test (a local server still starting is left to its own timeout)."""
        if self._test is None:
            return
        self._test["cancelled"] = True
        self._finish_test(tr("Test cancelled."))

    def testing(self) -> bool:
        return self._test is not None

    def _poll_test(self) -> None:
        test = self._test
        if test is None:
            self._poll.stop()
            return
        if test["thread"].is_alive():
            waited = time.monotonic() - test["started"]
            self.info_label.setText(tr("Connecting to the GeoPlonk server…") + f" {waited:.0f} s")
            return
        text, info = test["result"] or ("", None)
        if info is not None:
            self.set_models(info)
        self._finish_test(text)

    def _finish_test(self, text: str) -> None:
        self._poll.stop()
        self._test = None
        self.test_button.setEnabled(True)
        self.cancel_test_button.setEnabled(False)
        self.info_label.setText(text)
        self.last_test_text = text

    def _ask_info(self, settings: Settings) -> tuple[str, dict | None]:
        """(text to show, info or None), in the test's thread: never touches a widget."""
        from geoplonk_service.client import ServerError, ServerUnavailable
        from geoplonk_service.launcher import ServerStartError

        try:
            with self._connect(settings) as client:
                info = client.info()
            return "Connected: " + messages.describe_info(info), info
        except ServerStartError as exc:
            return f"The local server did not start:\n{exc.stderr or exc.summary}", None
        except ServerUnavailable:
            return f"No GeoPlonk server answers at {settings.endpoint}.", None
        except ServerError as exc:
            return f"The server answered with an error: {exc.message}", None
        except ImportError:
            return "pyzmq is missing from QGIS's Python (see the GeoPlonk message for how to install it).", None
        except Exception as exc:  # noqa: BLE001 - shown, never raised into QGIS
            return f"Test failed: {type(exc).__name__}: {exc}", None

    def test_connection(self, timeout_s: float = 600.0) -> str:
        """Run the test and wait for it while the event loop keeps running; returns the text shown."""
        from qgis.PyQt.QtCore import QEventLoop
        from qgis.PyQt.QtWidgets import QApplication

        self.last_test_text = ""
        if self.start_test():
            deadline = time.monotonic() + timeout_s
            while self._test is not None and time.monotonic() < deadline:
                QApplication.processEvents(QEventLoop.AllEvents, 50)
                time.sleep(0.01)
        return self.info_label.text()

    # -- models ----------------------------------------------------------------------------------

    def set_models(self, info: dict) -> None:
        """Fill the picker from the server's `info`: its models, the default first, each with its card."""
        current = self.selected_model()
        cards = {c.get("name"): c for c in info.get("model_cards") or [] if isinstance(c, dict)}
        self._cards = cards
        default = info.get("default_model") or ""
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItem(tr("server default") + (f" ({default})" if default else ""), "")
        for name in info.get("models") or []:
            name = name.get("name") if isinstance(name, dict) else str(name)
            self.model.addItem(name, name)
            card = cards.get(name)
            if card:
                self.model.setItemData(self.model.count() - 1, card.get("card", ""), Qt.ToolTipRole)
        index = self.model.findData(current) if current else 0
        self.model.setCurrentIndex(max(index, 0))
        self.model.blockSignals(False)
        self._default_model = default
        self._show_card()

    def _show_card(self, *_args) -> None:
        name = self.selected_model() or getattr(self, "_default_model", "")
        card = self._cards.get(name)
        self.model_card.setText(card.get("card", name) if card else (name or ""))

    def done(self, result: int) -> None:  # noqa: D401 - closing the dialog stops waiting for a test
        if self._test is not None:
            self._test["cancelled"] = True
            self._poll.stop()
            self._test = None
        super().done(result)
