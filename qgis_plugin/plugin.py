"""The QGIS plugin object: actions, photo selection, the background task, the local server.

The model never runs in QGIS's process: photos go to a `geoplonk serve` process over
ZeroMQ (started on demand with the configured command, stopped when QGIS closes).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMapLayerType, QgsMessageLog, QgsProject, QgsSettings
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices, QIcon
from qgis.PyQt.QtWidgets import QAction, QFileDialog, QInputDialog, QToolButton

from geoplonk_service import protocol as P
from geoplonk_service.photos import photos_in_folder, unique_paths

from . import layers, messages, sources
from .analyst_tools import AnalystTools
from .claims import quote
from .settings import PREFIX, Settings
from .translation import install_translator, tr

MENU = "&GeoPlonk"
ICON_PATH = os.path.join(os.path.dirname(__file__), "icon.svg")
ZOOM_ICON = "/mActionZoomToLayer.svg"  # QGIS's own theme icon
HELP_URL = "https://github.com/geoplonk/geoplonk#analysts-guide-qgis"
LAST_PHOTO_FOLDER = PREFIX + "last_photo_folder"  # a QgsSettings key, beside the Settings' own


class GeoPlonkPlugin:
    """Entry object created by classFactory.

    The dialog hooks (`choose_files`, `choose_folder`, `choose_field`) are attributes so
    tests and scripts can replace them; each returns what the user picked (empty = cancel).
    """

    def __init__(self, iface):
        self.iface = iface
        self.actions: list[QAction] = []
        self.toolbar = None
        self.provider = None
        self.task = None
        # Hands out clients and owns the local server started on demand (None without pyzmq); the toolbar task,
        # the settings dialog and Processing runs in this QGIS share it.
        self.servers = None
        self.last_report = None
        self.last_groups: list = []
        self.last_joint_group = None
        self.last_out_dir: Path | None = None
        self.choose_files: Callable[[], list[str]] = self._dialog_files
        self.choose_folder: Callable[[], str] = self._dialog_folder
        self.choose_field: Callable[[list[str]], str | None] = self._dialog_field
        self.open_file: Callable[[Path], bool] = lambda path: QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
        self.report_menu = None
        self._quit_connected = False
        self.analyst = AnalystTools(self)  # the case's claims and area of interest, and their actions

    # -- QGIS hooks -------------------------------------------------------------------

    def initProcessing(self) -> None:  # noqa: N802 - QGIS's name
        """Called by qgis_process (startProcessingPlugin) and by initGui in desktop QGIS; registers once."""
        if self.provider is not None:
            return
        from .processing.provider import GeoPlonkProvider

        provider = GeoPlonkProvider()
        if QgsApplication.processingRegistry().addProvider(provider):  # a refused provider is deleted by QGIS
            self.provider = provider

    def initGui(self) -> None:  # noqa: N802 - QGIS's name
        install_translator()
        self.initProcessing()
        icon = QIcon(ICON_PATH)
        main = self.iface.mainWindow()
        self.action_geolocate = QAction(icon, tr("Geolocate photos"), main)
        self.action_geolocate.setObjectName("geoplonkGeolocate")
        self.action_geolocate.setToolTip(tr("Geolocate selected photos"))
        self.action_geolocate.setStatusTip(
            tr("Geolocate the photos selected in the Browser panel or the active layer, or pick photo files")
        )
        self.action_geolocate.triggered.connect(self.geolocate_selected)
        self.action_folder = QAction(icon, tr("Geolocate a folder of photos…"), main)
        self.action_folder.setObjectName("geoplonkGeolocateFolder")
        self.action_folder.triggered.connect(self.geolocate_folder)
        self.action_zoom = QAction(QgsApplication.getThemeIcon(ZOOM_ICON), tr("Zoom to result"), main)
        self.action_zoom.setObjectName("geoplonkZoom")
        self.action_zoom.setToolTip(tr("Zoom the map to the selected GeoPlonk result group"))
        self.action_zoom.triggered.connect(self.zoom_to_result)
        self.action_report = QAction(tr("Open case report"), main)
        self.action_report.setObjectName("geoplonkCaseReport")
        self.action_report.setToolTip(tr("Write and open the HTML case report of the selected result group, with "
                                         "its map as QGIS draws it"))
        self.action_report.triggered.connect(self.open_case_report)
        self.action_settings = QAction(tr("GeoPlonk settings…"), main)
        self.action_settings.setObjectName("geoplonkSettings")
        self.action_settings.triggered.connect(self.show_settings)
        self.action_help = QAction(QgsApplication.getThemeIcon("/mActionHelpContents.svg"), tr("GeoPlonk help"), main)
        self.action_help.setObjectName("geoplonkHelp")
        self.action_help.setToolTip(tr("Open the analyst's guide (README) in the web browser"))
        self.action_help.triggered.connect(self.open_help)
        self.actions = [self.action_geolocate, self.action_folder, self.action_zoom,
                        *self.analyst.create_actions(main), self.action_report, self.action_settings,
                        self.action_help]

        self.toolbar = self.iface.addToolBar("GeoPlonk")
        if self.toolbar is not None:
            self.toolbar.setObjectName("GeoPlonkToolbar")
            self.toolbar.addAction(self.action_geolocate)
            self.toolbar.addAction(self.action_zoom)
            self.analyst.add_to_toolbar(self.toolbar)
        view = self._layer_tree_view()
        if view is not None:
            from .report_menu import ReportMenu

            self.report_menu = ReportMenu(view, self.action_report)
        for action in self.actions:
            self.iface.addPluginToMenu(MENU, action)
        try:
            from geoplonk_service.server_manager import LocalServerManager
        except ImportError:  # no pyzmq in QGIS's Python: geolocate() says how to install it
            pass
        else:
            self.servers = self.servers or LocalServerManager(
                log=lambda text: QgsMessageLog.logMessage(text, messages.LOG_TAG, Qgis.Info)
            )
        app = QgsApplication.instance()
        if app is not None and not self._quit_connected:
            app.aboutToQuit.connect(self.stop_local_server)
            self._quit_connected = True

    def unload(self) -> None:
        self.analyst.unload()
        if self.report_menu is not None:
            self.report_menu.remove()
            self.report_menu = None
        if self.task is not None:
            try:
                self.task.cancel()
            except RuntimeError:  # already deleted by the task manager
                pass
        for action in self.actions:  # deleted too: Install from ZIP over an installed plugin unloads and loads it
            self.iface.removePluginMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions = []
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self._quit_connected:
            try:
                QgsApplication.instance().aboutToQuit.disconnect(self.stop_local_server)
            except (TypeError, RuntimeError):
                pass
            self._quit_connected = False
        self.stop_local_server()
        self.servers = None

    # -- photo selection ----------------------------------------------------------------

    def selected_photos(self) -> list[str] | None:
        """Browser selection first, then selected features of the active layer, then the file dialog.

        With features selected, no file dialog opens: features without a usable photo path are skipped and
        counted in the message bar.  None: nothing to do, and the analyst has been told why (or cancelled).
        """
        paths = sources.browser_selected_paths(self.iface.mainWindow())
        if paths:
            return paths
        layer = self.iface.activeLayer()
        if layer is not None and layer.type() == QgsMapLayerType.VectorLayer and layer.selectedFeatureCount() > 0:
            names = sources.layer_field_names(layer)
            field = sources.detect_photo_field(names)
            if field is None and names:
                field = self.choose_field(names)
            if not field:
                return None  # the field prompt was cancelled
            paths, skipped = sources.selected_layer_photos(layer, field)
            if not paths:
                self._show(*messages.no_photos_in_features(layer.name(), field, skipped), level=Qgis.Warning)
                return None
            if skipped:
                self._show(*messages.skipped_features(layer.name(), field, skipped, len(paths)), level=Qgis.Info)
            return paths
        return unique_paths(self.choose_files() or [])

    def _dialog_files(self) -> list[str]:
        files, _ = QFileDialog.getOpenFileNames(
            self.iface.mainWindow(), tr("Geolocate photos"), _last_photo_folder(), sources.FILE_DIALOG_FILTER
        )
        if files:
            _remember_photo_folder(os.path.dirname(files[0]))
        return list(files)

    def _dialog_folder(self) -> str:
        folder = QFileDialog.getExistingDirectory(self.iface.mainWindow(), tr("Geolocate all photos in a folder"),
                                                  _last_photo_folder())
        if folder:
            _remember_photo_folder(folder)
        return folder

    def _dialog_field(self, names: list[str]) -> str | None:
        name, ok = QInputDialog.getItem(
            self.iface.mainWindow(), "GeoPlonk", tr("Which field holds the photo file path?"), names, 0, False
        )
        return name if ok and name else None

    # -- running ------------------------------------------------------------------------

    def geolocate_selected(self):
        paths = self.selected_photos()
        return None if paths is None else self.geolocate(paths)

    def geolocate_folder(self) -> None:
        folder = self.choose_folder()
        if folder:
            self.geolocate([str(p) for p in photos_in_folder(folder)])

    def geolocate_selected_as_one_place(self):
        """The selected photos, known to come from one place: their maps and one joint map."""
        paths = self.selected_photos()
        if paths is None:
            return None
        if not 2 <= len(paths) <= P.MAX_JOINT_PHOTOS:
            self._show(*messages.joint_photo_count(len(paths), P.MAX_JOINT_PHOTOS), level=Qgis.Warning)
            return None
        return self.geolocate(paths, joint=True)

    def geolocate(self, paths: list[str], joint: bool = False):
        """Start a background task for `paths` with the case's claims and area (and a joint map of them all with
        `joint`); returns the task (None when nothing was started)."""
        try:
            import zmq  # noqa: F401 - only to check that QGIS's Python has it
        except ImportError:
            self._show(*messages.pyzmq_missing(), level=Qgis.Critical)
            return None
        if not paths:
            self._show(*messages.no_photos(), level=Qgis.Warning)
            return None
        if self.task is not None and self._task_running():
            self._show("GeoPlonk", tr("A geolocation is already running; cancel it in the task manager first."), "",
                       level=Qgis.Warning)
            return None
        from .task import GeolocateTask

        settings = Settings.load()
        out_dir = layers.output_folder(settings.output_folder)
        self.last_out_dir = out_dir
        self.last_groups = []
        self.last_joint_group = None
        self.last_report = None
        notes = messages.JobNotes()  # this job's: a late signal of an earlier job never mixes its notes in
        task = GeolocateTask(paths, settings, out_dir, lambda: self.connect(settings), self.analyst.analysis.options(),
                             joint)
        task.photoDone.connect(functools.partial(self._on_photo_done, notes=notes))
        task.jointDone.connect(functools.partial(self._on_joint_done, notes=notes))
        task.jobDone.connect(functools.partial(self._on_job_done, notes=notes))
        self.task = task
        QgsApplication.taskManager().addTask(task)
        return task

    def _task_running(self) -> bool:
        try:
            return self.task.status() in (self.task.Queued, self.task.OnHold, self.task.Running)
        except RuntimeError:
            return False

    def connect(self, settings: Settings):
        """A client to a server that answers: the configured endpoint, else a local server (started on demand).

        Called from task threads too; raises ServerUnavailable or ServerStartError, ImportError without pyzmq.
        """
        if self.servers is None:
            raise ImportError("pyzmq is not importable in QGIS's Python")
        start_command = settings.start_command if settings.auto_start else None
        return self.servers.connect(settings.endpoint, start_command, settings.timeout_s)

    def stop_local_server(self) -> None:
        if self.servers is not None:
            self.servers.close()

    # -- main-thread slots ------------------------------------------------------------------

    def _on_photo_done(self, outcome, notes: messages.JobNotes) -> None:
        if outcome.status == "ok":
            try:
                group = layers.add_result_group(Path(outcome.path).name, outcome.files, outcome.summary or {},
                                                outcome.path)
            except Exception as exc:  # noqa: BLE001 - one bad result must not stop the others
                self._note(notes.not_loaded(outcome.name, str(exc)), Qgis.Warning, repr(exc))
                return
            self.last_groups.append(group)
            if len(self.last_groups) == 1:
                layers.add_basemap()  # only when the project has none: QGIS's offline world map, under the results
            for warning in (outcome.summary or {}).get("warnings") or []:
                self._note(notes.warned(outcome.name, warning), Qgis.Warning)
            self._note_claims(notes, outcome.name, outcome.summary or {})
            view = self._layer_tree_view()
            if view is not None and len(self.last_groups) == 1:
                view.setCurrentIndex(view.layerTreeModel().node2index(group))  # "Zoom to result" acts on it
        elif outcome.status == "failed":
            self._note(notes.failed(outcome.name, outcome.error), Qgis.Warning)

    def _on_joint_done(self, outcome, notes: messages.JobNotes) -> None:
        if outcome.status != "ok":
            if outcome.status == "failed":
                self._note(notes.joint_failed(outcome.error), Qgis.Warning)
            return
        try:
            group = layers.add_result_group(outcome.name, outcome.files, outcome.summary or {})
        except Exception as exc:  # noqa: BLE001 - the photos' own groups stay
            self._note(notes.joint_failed(f"its files could not be loaded ({exc})"), Qgis.Warning, repr(exc))
            return
        self.last_groups.append(group)
        self.last_joint_group = group
        self._note(notes.joint_made(layers.photo_of_group(group)), Qgis.Info)
        self._note_claims(notes, layers.photo_of_group(group), outcome.summary or {})
        view = self._layer_tree_view()
        if view is not None:
            view.setCurrentIndex(view.layerTreeModel().node2index(group))

    def _note_claims(self, notes: messages.JobNotes, name: str, summary: dict) -> None:
        checks = summary.get("claims") or []
        if checks:
            self._note(notes.judged(name, [quote(c) for c in checks]), Qgis.Info)

    @staticmethod
    def _note(line: str, level, details: str = "") -> None:
        """One photo's note, in the log panel now; the job's end tells them all in one message (JobNotes)."""
        QgsMessageLog.logMessage(line + (f"\n{details}" if details else ""), messages.LOG_TAG, level)

    def _on_job_done(self, report, notes: messages.JobNotes) -> None:
        self.last_report = report
        if report.error_title:  # the photos that ended before it keep their notes, behind "More"
            title, text, noted = notes.message(report.error_title, report.error_text)
            self._show(title, text, "\n".join(d for d in (report.error_details, noted) if d), level=Qgis.Critical)
            return
        folder = messages.saved_to(str(self.last_out_dir)) if report.ok else ""
        if report.cancelled:
            text = messages.cancelled(report.ok, report.cancelled, report.failed)
            self._show(*notes.message(tr("GeoPlonk: cancelled"), f"{text} {folder}".strip()), level=Qgis.Warning,
                       logged=True)
            return
        text = messages.summary(report.ok, report.failed, report.cancelled, report.seconds)
        level = Qgis.Warning if report.failed or notes.troubled else Qgis.Success
        self._show(*notes.message("GeoPlonk", f"{text}. {folder}" if folder else text), level=level, logged=True)

    def show_message(self, title: str, text: str, details: str = "", level=Qgis.Info) -> None:
        self._show(title, text, details, level)

    def show_hint(self, text: str):
        """A hint for the user's next act (a click on the map), which `end_hint` takes off the bar once it came.
        Made here, not by QGIS's factory, so that Python learns when QGIS deletes it (its time ran out)."""
        from qgis.gui import QgsMessageBarItem

        bar = self.iface.messageBar()
        if bar is None:
            return None
        item = QgsMessageBarItem("GeoPlonk", text, Qgis.Info, 10)
        bar.pushItem(item)
        return item

    def end_hint(self, item) -> None:
        bar = self.iface.messageBar()
        if bar is not None and item is not None and not sip.isdeleted(item):
            bar.popWidget(item)

    def _show(self, title: str, text: str, details: str = "", level=Qgis.Info, logged: bool = False) -> None:
        """Message bar text in plain language, details behind its "More" button; both go to the log panel
        (`logged`: the details are there already, as notes)."""
        bar = self.iface.messageBar()
        duration = 10 if level != Qgis.Critical else 0
        if bar is not None:
            bar.pushMessage(title, text, level=level, duration=duration)
            item = bar.currentItem()  # the item QGIS made, or the same message already there (it drops repeats)
            if details and item is not None and (item.title(), item.text()) == (title, text):
                more = QToolButton(item)  # owned by the item: Python must not free it
                more.setText(tr("More"))
                more.setToolTip(tr("Show the details of this message"))
                more.clicked.connect(functools.partial(show_details, self.iface.mainWindow(), title,
                                                       messages.details_html(text, details)))
                item.setWidget(more)
        QgsMessageLog.logMessage(f"{title}: {text}" + (f"\n{details}" if details and not logged else ""),
                                 messages.LOG_TAG, level)

    # -- other actions -----------------------------------------------------------------------

    def zoom_to_result(self) -> None:
        view = self._layer_tree_view()
        node = view.currentNode() if view is not None else None
        group = layers.find_result_group(node)
        if group is None and self.last_groups:
            group = self.last_groups[-1]
        if group is None:
            self._show("GeoPlonk", tr("Select a GeoPlonk result group in the Layers panel first."), level=Qgis.Info)
            return
        canvas = self.iface.mapCanvas()
        extent = layers.group_extent(group)
        dest = canvas.mapSettings().destinationCrs()
        if dest.authid() != "EPSG:4326":
            from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform

            transform = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), dest, QgsProject.instance())
            extent = transform.transformBoundingBox(extent)
        canvas.setExtent(extent)
        canvas.refresh()

    def open_case_report(self):
        """Write the selected result group's case report (its map rendered by QGIS) and open it; returns its
        path, or None when there is no group to report on (the message bar says why)."""
        from .report import ReportError, write_case_report

        view = self._layer_tree_view()
        group = layers.find_result_group(view.currentNode() if view is not None else None)
        if group is None and view is None and self.last_groups:
            group = self.last_groups[-1]
        try:
            path = write_case_report(group)
        except ReportError as exc:
            self._show(*messages.input_refused(str(exc)), level=Qgis.Warning)
            return None
        except OSError as exc:
            self._show(*messages.report_not_written(str(exc.strerror or exc), repr(exc)), level=Qgis.Warning)
            return None
        self._show(*messages.report_written(str(path)), level=Qgis.Info)
        self.open_file(path)
        return path

    def open_help(self) -> bool:
        """The README's analyst's guide in the web browser."""
        return QDesktopServices.openUrl(QUrl(HELP_URL))

    def _layer_tree_view(self):
        """The Layers panel's view, or None (test stand-ins of iface may not have a real one)."""
        from qgis.gui import QgsLayerTreeView

        view = self.iface.layerTreeView()
        return view if isinstance(view, QgsLayerTreeView) else None

    def show_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        dialog = SettingsDialog(Settings.load(), self.iface.mainWindow(), connect=self.connect)
        if dialog.exec_():
            dialog.settings().save()


def show_details(parent, title: str, html: str, _checked: bool = False) -> None:
    """A message's details in QGIS's message viewer, not modal: the map stays usable beside it. A function, not a
    method: a message's button must not keep an unloaded plugin alive."""
    from qgis.gui import QgsMessageViewer

    viewer = QgsMessageViewer(parent)
    viewer.setTitle(title)
    viewer.setMessageAsHtml(html)
    viewer.showMessage(False)


def _last_photo_folder() -> str:
    """Where the photo dialogs open: the folder photos were last chosen in, else the home folder."""
    folder = str(QgsSettings().value(LAST_PHOTO_FOLDER, "") or "")
    return folder if folder and os.path.isdir(folder) else os.path.expanduser("~")


def _remember_photo_folder(folder: str) -> None:
    QgsSettings().setValue(LAST_PHOTO_FOLDER, folder)
