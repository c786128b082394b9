"""The background job: send the photos to the server, save each result as it arrives.

Runs in a QgsTask thread so QGIS never freezes.  It touches no layers: each saved
result is emitted (`photoDone`) and the plugin adds the layers on the main thread.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from geoplonk_service.output_files import unused_stem
from geoplonk_service.protocol import E_MODEL, STATUS_CANCELLED, job_units

from . import messages
from .progress import JobProgress
from .settings import Settings


@dataclass
class PhotoOutcome:
    """What the main thread needs for one photo: where its files are, or why it failed."""

    path: str
    name: str
    status: str  # "ok" | "failed" | "cancelled"
    files: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    error: str = ""


@dataclass
class TaskReport:
    ok: int = 0
    failed: int = 0
    cancelled: int = 0
    seconds: float = 0.0
    error_title: str = ""  # set when the whole job failed (server down, start failed, model missing)
    error_text: str = ""
    error_details: str = ""


class GeolocateTask(QgsTask):
    """Geolocate `paths` and save results under `out_dir`.

    `connect` returns a ready GeoPlonkClient (it may start a local server; it raises
    ServerUnavailable / ServerStartError): injected so the plugin owns the server.  `options`: the analyst's
    options over the settings' (claims, area of interest); with `joint` the photos also make one joint map.
    """

    photoDone = pyqtSignal(object)  # PhotoOutcome, emitted from the task thread, delivered queued
    jointDone = pyqtSignal(object)  # PhotoOutcome of the joint map (path ""), after the photos' results
    jobDone = pyqtSignal(object)  # TaskReport, emitted on the main thread from finished()

    def __init__(self, paths: list[str], settings: Settings, out_dir: Path, connect: Callable[[], Any],
                 options: dict[str, Any] | None = None, joint: bool = False):
        super().__init__(f"GeoPlonk: geolocating {len(paths)} photo{'s' if len(paths) != 1 else ''}"
                         + (" as one place" if joint else ""), QgsTask.CanCancel)
        self.paths = list(paths)
        self.settings = settings
        self.options = {**settings.options(), **(options or {})}
        self.joint = joint
        self.out_dir = Path(out_dir)
        self._connect = connect
        self.report = TaskReport()
        self._stems: set[str] = set()
        self._finished_count = 0
        self._bar = JobProgress(job_units(len(self.paths), joint))
        self.last_stage: str | None = None  # the server's latest progress stage (e.g. "embed", "sample")
        self.progress_log: list[tuple[float, str, float]] = []  # (seconds since start, stage, percent)
        self._started = time.monotonic()

    # -- task thread ----------------------------------------------------------------

    def run(self) -> bool:
        start = self._started = time.monotonic()
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - reported in plain language, never raised into QGIS
            self._fail_job(exc)
        self.report.seconds = time.monotonic() - start
        return not self.report.error_title

    def _run(self) -> None:
        bar = self._bar

        def on_progress(progress: dict) -> None:
            self.last_stage = str(progress.get("stage") or "")
            self._advance(bar.update(progress), self.last_stage)

        with self._connect() as client:
            if self.joint:
                _, joint = client.geolocate_joint(self.paths, self.options, on_progress=on_progress,
                                                  on_result=self._save, is_cancelled=self.isCanceled)
                self._save_joint(joint)
                return
            client.geolocate(
                self.paths,
                self.options,
                on_progress=on_progress,
                on_result=self._save,
                is_cancelled=self.isCanceled,
            )

    def _save_joint(self, result) -> None:
        """The joint map beside the photos' files (joint.*, or joint_2.* when the name is taken)."""
        outcome = self._written("", result, "the joint map")
        if outcome.status != STATUS_CANCELLED:  # a cancelled job's bar stays where the work stopped
            self._advance(self._bar.finished(self._bar.units), "joint")
        self.jointDone.emit(outcome)

    def _advance(self, percent: float, stage: str) -> None:
        """Show the bar (JobProgress keeps it moving forward) and log it for the tests."""
        self.setProgress(percent)
        self.progress_log.append((time.monotonic() - self._started, stage, percent))

    def _save(self, result) -> None:
        self._emit(self._written(self.paths[result.index], result, "the result"))

    def _written(self, path: str, result, what: str) -> PhotoOutcome:
        """The outcome of a result, with its files written under a stem no other result of the job took; a
        failure to write fails this result alone."""
        outcome = PhotoOutcome(path, result.name, result.status, summary=result.summary)
        if result.ok:
            try:
                stem = unused_stem(self.out_dir, result.default_stem(), self._stems)
                self._stems.add(stem)
                outcome.files = {k: str(v) for k, v in result.save(self.out_dir, stem).items()}
            except OSError as exc:
                outcome.status = "failed"
                outcome.error = f"cannot write {what} to {self.out_dir}: {exc.strerror or exc}"
        else:
            outcome.error = str((result.error or {}).get("message", "")) or outcome.status
        return outcome

    def _emit(self, outcome: PhotoOutcome) -> None:
        self._finished_count += 1
        if outcome.status == "ok":
            self.report.ok += 1
        elif outcome.status == STATUS_CANCELLED:
            self.report.cancelled += 1
        else:
            self.report.failed += 1
        if outcome.status != STATUS_CANCELLED:  # a cancelled job's bar stays where the work stopped
            self._advance(self._bar.finished(self.report.ok + self.report.failed), "result")
        self.photoDone.emit(outcome)

    def _fail_job(self, exc: Exception) -> None:
        from geoplonk_service.client import ServerError, ServerUnavailable
        from geoplonk_service.launcher import ServerStartError
        from geoplonk_service.server_manager import ManagerClosed

        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, ServerStartError):
            title, text, more = messages.server_start_failed(self.settings.start_command, exc.stderr or exc.summary)
        elif isinstance(exc, ManagerClosed):  # the plugin is unloading or QGIS quitting
            title, text, more = "GeoPlonk: stopped", str(exc), ""
        elif isinstance(exc, ServerUnavailable):
            title, text, more = messages.server_unreachable(self.settings.endpoint, self.settings.auto_start, str(exc))
        elif isinstance(exc, ServerError) and exc.code == E_MODEL:
            title, text, more = messages.model_missing(exc.message)
        elif isinstance(exc, ServerError):
            title, text, more = "GeoPlonk: the server refused the job", f"{exc.message} ({exc.code})", ""
        else:
            title, text, more = "GeoPlonk: unexpected error", f"{type(exc).__name__}: {exc}", ""
        self.report.error_title, self.report.error_text = title, text
        self.report.error_details = f"{more}\n{details}".strip()
        pending = len(self.paths) - self._finished_count
        self.report.failed += max(pending, 0)

    # -- main thread ------------------------------------------------------------------

    def finished(self, result: bool) -> None:  # noqa: ARG002 - QgsTask's signature
        if self.report.error_details:
            QgsMessageLog.logMessage(self.report.error_details, messages.LOG_TAG, Qgis.Critical)
        self.jobDone.emit(self.report)
