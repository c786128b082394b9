"""The settings dialog: a plain form over Settings, plus "Test connection" (shows the server's info)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
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
from .settings import Settings, parse_levels

# The guidance box's bottom value, one step below the protocol's least cfg: "the model's calibrated".
GUIDANCE_MODEL_DEFAULT = P.CFG.minimum - 0.1


class SettingsDialog(QDialog):
    """Edit a Settings copy; `settings()` returns the edited values (the caller saves them)."""

    def __init__(self, settings: Settings, parent: QWidget | None, connect: Callable[[Settings], Any]):
        """`connect(settings)` returns a client to a server that answers (the plugin's, which may start one)."""
        super().__init__(parent)
        self.setWindowTitle("GeoPlonk settings")
        self.setObjectName("GeoPlonkSettingsDialog")
        self._connect = connect
        self._base = settings
        form = QFormLayout()

        self.endpoint = QLineEdit(settings.endpoint)
        self.endpoint.setToolTip(f"ZeroMQ address of a running `geoplonk serve`, e.g. {P.DEFAULT_ENDPOINT}")
        form.addRow("Server endpoint", self.endpoint)
        self.start_command = QLineEdit(settings.start_command)
        self.start_command.setToolTip(
            "Command that starts a local server when none answers,"
            " e.g. /home/me/geoplonk/.venv/server/bin/geoplonk serve"
        )
        form.addRow("Start command", self.start_command)
        self.auto_start = QCheckBox("Start a local server automatically when none answers")
        self.auto_start.setChecked(settings.auto_start)
        form.addRow("", self.auto_start)
        self.model = QLineEdit(settings.model)
        self.model.setPlaceholderText("server default")
        form.addRow("Model", self.model)
        self.samples = QSpinBox()
        self.samples.setRange(P.SAMPLES.minimum, P.SAMPLES.maximum)
        self.samples.setValue(settings.samples)
        form.addRow("Samples", self.samples)
        self.steps = QSpinBox()
        self.steps.setRange(P.STEPS.minimum, P.STEPS.maximum)
        self.steps.setValue(settings.steps)
        form.addRow("Solver steps", self.steps)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(GUIDANCE_MODEL_DEFAULT, P.CFG.maximum)
        self.guidance.setSingleStep(0.1)
        self.guidance.setSpecialValueText("model's calibrated")  # shown at the minimum: send no cfg
        self.guidance.setValue(GUIDANCE_MODEL_DEFAULT if settings.cfg is None else settings.cfg)
        self.guidance.setToolTip(
            "Guidance w of the distribution drawn on the map: below 0 wider, above 0 sharper than the model."
            " At the bottom of the range, the model's own calibrated value (geoplonk calibrate)."
        )
        form.addRow("Guidance (cfg)", self.guidance)
        self.resolution = QDoubleSpinBox()
        self.resolution.setDecimals(3)
        self.resolution.setRange(P.RESOLUTION.minimum, P.RESOLUTION.maximum)
        self.resolution.setSingleStep(0.05)
        self.resolution.setSuffix(" °")
        self.resolution.setValue(settings.resolution)
        form.addRow("Raster resolution", self.resolution)
        self.levels = QLineEdit(", ".join(f"{v * 100:g}" for v in settings.levels))
        self.levels.setToolTip("Credible region levels in percent, comma separated")
        form.addRow("Credible levels (%)", self.levels)
        self.output_folder = QLineEdit(settings.output_folder)
        self.output_folder.setPlaceholderText("the project's folder (a temporary folder if unsaved)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.output_folder)
        row.addWidget(browse)
        form.addRow("Output folder", row)

        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.test_connection)
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
        layout.addWidget(self.test_button)
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
            model=self.model.text().strip(),
            samples=self.samples.value(),
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

    def test_connection(self) -> str:
        """Ask the server for `info` (starting a local one if allowed); shows and returns the text."""
        from geoplonk_service.client import ServerError, ServerUnavailable
        from geoplonk_service.launcher import ServerStartError

        try:
            settings = self.settings()
        except ValueError as exc:
            text = str(exc)
        else:
            try:
                with self._connect(settings) as client:
                    text = "Connected: " + messages.describe_info(client.info())
            except ServerStartError as exc:
                text = f"The local server did not start:\n{exc.stderr or exc.summary}"
            except ServerUnavailable:
                text = f"No GeoPlonk server answers at {settings.endpoint}."
            except ServerError as exc:
                text = f"The server answered with an error: {exc.message}"
            except ImportError:
                text = "pyzmq is missing from QGIS's Python (see the GeoPlonk message for how to install it)."
        self.info_label.setText(text)
        return text
