"""Runs inside full desktop QGIS (`qgis --code desktop_script.py`), driven by tests/plugin/test_desktop.py.

What an analyst does: open a photo point layer and select its features (a decoy: the Browser
selection comes first), add the photo folder to Favorites in the real Browser dock, expand it, select
two JPEGs there, click GeoPlonk's toolbar button, wait for the result groups, zoom to the result.  Then it saves a
screenshot of the main window and a JSON report of what QGIS shows, clears the
project (no "save changes?" dialog) and quits.

Configuration comes from the environment: GEOPLONK_DESKTOP_LAYER (the photo layer),
GEOPLONK_DESKTOP_OUT (folder for report.json, desktop.png, canvas.png),
GEOPLONK_DESKTOP_TIMEOUT (seconds to wait for the results), GEOPLONK_DESKTOP_BROWSER_DIR (the folder
to add to Favorites) and GEOPLONK_DESKTOP_BROWSER_FILES (comma-separated names to select in it).
Before pressing the button it sets a claim by clicking the canvas with the claim tool; after the screenshot it
right-clicks the first result group in the Layers panel and clicks "Open case report" in the menu, then opens
Processing's dialog for the algorithm on a folder of the same two photos and clicks its Run button, then does the
same in its batch dialog, one row per photo, with "Load layers on completion" off (its default), then on. Then it
installs the plugin's zip again with QGIS's own installer, over the plugin in use, and last, with nothing selected,
presses the toolbar button and chooses two photos in the file dialog that opens, and sets a model and the samples
in the settings dialog.
Everything is driven by a QTimer: QGIS's event loop must keep running.
"""

import gc
import json
import os
import shutil
import sys
import time
import traceback
import weakref
from pathlib import Path

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer, QgsRenderContext
from qgis.PyQt.QtCore import QObject, Qt, QTimer
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QToolButton
from qgis.utils import iface, plugins

PLUGIN = "geoplonk"
OUT = Path(os.environ["GEOPLONK_DESKTOP_OUT"])
LAYER = os.environ["GEOPLONK_DESKTOP_LAYER"]
TIMEOUT_S = float(os.environ.get("GEOPLONK_DESKTOP_TIMEOUT", "300"))
sys.path.insert(0, os.environ["GEOPLONK_DESKTOP_HELPERS"])  # tests/plugin: the shared tree_menu helper
BROWSER_DIR = os.environ.get("GEOPLONK_DESKTOP_BROWSER_DIR", "")
BROWSER_FILES = [n for n in os.environ.get("GEOPLONK_DESKTOP_BROWSER_FILES", "").split(",") if n]
TICK_MS = 200


class DesktopRun(QObject):
    """A small state machine stepped by a timer: each step (a method in self.state) checks whether QGIS got where it
    waits for, then acts and names the next step; the module's docstring lists them in order."""

    def __init__(self):
        super().__init__(iface.mainWindow())
        self.report = {"steps": [], "errors": []}
        self.t0 = time.monotonic()
        self.clicked_at = None
        self.first_group_at = None
        self.render_started = None
        self.zoomed_extent = None  # the canvas after "Zoom to result", in the canvas's CRS
        self.state = self.wait_for_plugin
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.tick)
        self.timer.start(TICK_MS)

    def log(self, text):
        self.report["steps"].append(f"{time.monotonic() - self.t0:7.2f}s {text}")

    def tick(self):
        try:
            if time.monotonic() - self.t0 > TIMEOUT_S:
                from qgis.PyQt.QtWidgets import QApplication

                modal = QApplication.activeModalWidget()
                shown = f"{modal.metaObject().className()} {modal.windowTitle()!r}" if modal else "none"
                self.report["errors"].append(f"timed out in step {self.state.__name__} (modal window: {shown})")
                self.finish()
                return
            self.state()
        except Exception:  # report it and quit: never leave QGIS hanging
            self.report["errors"].append(traceback.format_exc())
            self.finish()

    # -- steps ---------------------------------------------------------------------------

    def wait_for_plugin(self):
        plugin = plugins.get(PLUGIN)
        if plugin is None or getattr(plugin, "action_geolocate", None) is None:
            return
        self.plugin = plugin
        self.log("plugin loaded")
        iface.mainWindow().setGeometry(0, 0, 1400, 900)  # no window manager under Xvfb: maximise by hand
        layer = iface.addVectorLayer(LAYER, "Holiday photos", "ogr")
        if layer is None or not layer.isValid():
            raise RuntimeError(f"cannot open the photo layer {LAYER}")
        iface.setActiveLayer(layer)
        layer.selectAll()
        self.photo_layer = layer
        self.report["photo_layer"] = {"name": layer.name(), "selected": layer.selectedFeatureCount()}
        if BROWSER_DIR:
            iface.browserModel().addFavoriteDirectory(BROWSER_DIR)
            self.log(f"added {BROWSER_DIR} to the Browser's Favorites")
            self.state = self.select_in_browser
        else:
            self.click_geolocate()

    def browser_view(self):
        """The real Browser dock's tree view (sip wraps the C++ QgsDockBrowserTreeView as a QTreeView)."""
        from qgis.PyQt.QtWidgets import QTreeView

        for view in iface.mainWindow().findChildren(QTreeView):
            if view.metaObject().className() == "QgsDockBrowserTreeView":
                return view
        return None

    def select_in_browser(self):
        """Expand Favorites > the photo folder in the dock, then select BROWSER_FILES through its selection model."""
        from qgis.core import QgsBrowserModel
        from qgis.PyQt.QtCore import QItemSelectionModel

        view = self.browser_view()
        if view is None:
            raise RuntimeError("no Browser dock view (QgsDockBrowserTreeView) in the main window")
        dock = view.parent()
        while dock is not None and not dock.inherits("QDockWidget"):
            dock = dock.parent()
        if dock is not None and not dock.isVisible():
            dock.show()
        proxy = view.model()

        def child_with_path(parent, *paths):
            for row in range(proxy.rowCount(parent)):
                index = proxy.index(row, 0, parent)
                if proxy.data(index, QgsBrowserModel.PathRole) in paths:
                    return index
            return None

        favourites = child_with_path(view.rootIndex(), "favorites:")
        if favourites is None:
            return
        view.expand(favourites)
        if proxy.canFetchMore(favourites):
            proxy.fetchMore(favourites)
        folder = None  # 3.22 names a favourite "favorites:/|work|main|samples" and shows the folder's path
        for row in range(proxy.rowCount(favourites)):
            index = proxy.index(row, 0, favourites)
            path = str(proxy.data(index, QgsBrowserModel.PathRole) or "")
            if BROWSER_DIR in (path, proxy.data(index, Qt.DisplayRole)) or path.endswith(BROWSER_DIR.replace("/", "|")):
                folder = index
        self.report["browser_favourites"] = [str(proxy.data(proxy.index(r, 0, favourites), QgsBrowserModel.PathRole))
                                             for r in range(proxy.rowCount(favourites))]
        if folder is None:
            return
        view.expand(folder)
        if proxy.canFetchMore(folder):
            proxy.fetchMore(folder)
        wanted = [os.path.join(BROWSER_DIR, name) for name in BROWSER_FILES]
        rows = [child_with_path(folder, path) for path in wanted]
        if any(row is None for row in rows):
            return  # the folder's children are still being listed
        selection = view.selectionModel()
        selection.clearSelection()
        for row in rows:
            selection.select(row, QItemSelectionModel.Select | QItemSelectionModel.Rows)
        view.scrollTo(rows[-1])
        self.report["browser"] = {
            "view_class": view.metaObject().className(),
            "model_class": proxy.metaObject().className(),
            "selected": sorted(proxy.data(i, QgsBrowserModel.PathRole) for i in selection.selectedRows()),
            "children": proxy.rowCount(folder),
            "plugin_sees": sorted(self.plugin_sources().browser_selected_paths(iface.mainWindow())),
        }
        self.log(f"selected {len(rows)} photos in the Browser dock")
        self.click_geolocate()

    def plugin_sources(self):
        return sys.modules[type(self.plugin).__module__.rsplit(".", 1)[0] + ".sources"]

    def click_claim(self):
        """The claim tool, then a left click in the middle of the real canvas."""
        from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform

        canvas = iface.mapCanvas()
        before = canvas.mapTool()
        self.plugin.analyst.action_claim_click.trigger()
        active = canvas.mapTool() is self.plugin.analyst.claim_tool
        centre = canvas.viewport().rect().center()
        QTest.mouseClick(canvas.viewport(), Qt.LeftButton, Qt.NoModifier, centre)
        point = canvas.getCoordinateTransform().toMapCoordinates(centre.x(), centre.y())
        transform = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(),
                                           QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
        expected = transform.transform(point)
        self.report["claim"] = {
            "tool_active": active, "tool_given_back": canvas.mapTool() is before,
            "claims": self.plugin.analyst.analysis.claims, "expected": [expected.y(), expected.x()],
            "pixel_deg": canvas.mapUnitsPerPixel() if canvas.mapSettings().destinationCrs().isGeographic() else None,
        }
        self.log("claim set by clicking the canvas")

    def click_geolocate(self):
        plugin = self.plugin
        self.click_claim()
        button = self.toolbar_button(plugin.action_geolocate)
        self.report["toolbar_button"] = {"found": button is not None, "tooltip": button.toolTip() if button else ""}
        if button is None:
            raise RuntimeError("no toolbar button for GeoPlonk's action")
        self.log("clicking the toolbar button")
        self.clicked_at = time.monotonic()
        plugin.choose_files = self.file_dialog_opened  # the file dialog must not open
        QTest.mouseClick(button, Qt.LeftButton)
        self.state = self.wait_for_results

    def file_dialog_opened(self):
        self.report["errors"].append("the file dialog opened although photos were selected in the Browser")
        return []

    @staticmethod
    def toolbar_button(action):
        for button in iface.mainWindow().findChildren(QToolButton):
            if button.defaultAction() is action and button.isVisible():
                return button
        return None

    def wait_for_results(self):
        if self.first_group_at is None and self.result_groups():
            self.first_group_at = time.monotonic()
            self.log("first result group on the map")
        if self.plugin.last_report is None:
            return
        report = self.plugin.last_report
        self.report["task"] = {
            "ok": report.ok,
            "failed": report.failed,
            "cancelled": report.cancelled,
            "seconds": report.seconds,
            "error": report.error_title,
            "error_text": report.error_text,
            "paths": list(getattr(self.plugin.task, "paths", [])),
        }
        self.report["timings"] = {
            "click_to_first_layer_s": (self.first_group_at or time.monotonic()) - self.clicked_at,
            "click_to_all_layers_s": time.monotonic() - self.clicked_at,
        }
        self.log(f"task done: {report.ok} ok, {report.failed} failed {report.error_title}")
        # the bar as the job left it (its messages last 10 s; the render below may take a while)
        self.report["message_bar"] = [{"title": item.title(), "text": item.text(), "level": int(item.level())}
                                      for item in iface.messageBar().items()]
        if self.result_groups():
            self.plugin.zoom_to_result()  # the analyst's button; then out to all the results, for the screenshot
            zoomed = iface.mapCanvas().extent()
            self.zoomed_extent = [zoomed.xMinimum(), zoomed.yMinimum(), zoomed.xMaximum(), zoomed.yMaximum()]
            layers = sys.modules[type(self.plugin).__module__.rsplit(".", 1)[0] + ".layers"]
            extent = None
            for group in self.result_groups():
                box = layers.group_extent(group)
                extent = box if extent is None else extent.combineExtentWith(box) or extent
            extent.scale(1.4)  # room for the labels at the edges
            iface.mapCanvas().setExtent(extent)
        iface.mapCanvas().refreshAllLayers()
        self.render_started = time.monotonic()
        self.state = self.wait_for_render

    def wait_for_render(self):
        canvas = iface.mapCanvas()
        if canvas.isDrawing() or time.monotonic() - self.render_started < 2.0:
            return
        self.log("canvas rendered")
        self.describe()
        OUT.mkdir(parents=True, exist_ok=True)
        self.report["screenshot"] = str(OUT / "desktop.png")
        self.report["screenshot_saved"] = iface.mainWindow().grab().save(str(OUT / "desktop.png"))
        self.report["canvas_saved"] = canvas.grab().save(str(OUT / "canvas.png"))
        self.open_case_report()
        self.run_processing_dialog()

    def run_processing_dialog(self):
        """Processing's own dialog for the algorithm (the one the Toolbox opens), a folder of two photos set in it,
        then its real Run button: the dialog runs the algorithm as a background task and loads its layers itself,
        which processing.run and qgis_process do not."""
        import processing

        folder = OUT / "processing-photos"
        folder.mkdir(parents=True, exist_ok=True)
        for name in BROWSER_FILES:
            shutil.copy(Path(BROWSER_DIR) / name, folder / name)
        parameters = {"FOLDER": str(folder), "OUTPUT_FOLDER": str(OUT / "processing-results"), "SAMPLES": 256,
                      "RESOLUTION": 1.0}
        dialog = processing.createAlgorithmDialog("geoplonk:geolocatephotos", parameters)
        self.processing = {"layers_before": set(QgsProject.instance().mapLayers()), "dialog": dialog}
        dialog.algorithmFinished.connect(self.processing_finished)
        dialog.show()
        QTest.mouseClick(dialog.runButton(), Qt.LeftButton)
        self.processing_started = time.monotonic()
        self.log("clicked Run in the Processing dialog")
        self.state = self.wait_for_processing

    def run_processing_batch(self):
        """Processing's batch dialog, one row per photo folder typed into its real table, then its Run button: the
        batch runs the algorithm row after row on QGIS's main thread, which a single run never does."""
        from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
        from qgis.core import QgsApplication, QgsProcessingContext
        from qgis.PyQt.QtWidgets import QStyle, QStyleOptionButton, QTabBar

        alg = QgsApplication.processingRegistry().createAlgorithmById("geoplonk:geolocatephotos")
        dialog = BatchAlgorithmDialog(alg, iface.mainWindow())
        dialog.show()
        panel = dialog.mainWidget()
        panel.addRow(len(BROWSER_FILES) - panel.batchRowCount())
        context = QgsProcessingContext()
        for row, name in enumerate(BROWSER_FILES):
            folder = OUT / "batch-photos" / f"row{row}"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(BROWSER_DIR) / name, folder / name)
            for parameter, value in (("FOLDER", str(folder)), ("SAMPLES", 256), ("RESOLUTION", 1.0)):
                panel.wrappers[row][panel.parameter_to_column[parameter]].setParameterValue(value, context)
            panel.tblParameters.cellWidget(row + 1, panel.parameter_to_column["OUTPUT_FOLDER"]).setValue(
                str(OUT / "batch-results" / f"row{row}"))
        runs = []
        for load in (False, True):  # the dialog's "Load layers on completion": off by default, then clicked on
            box = panel.checkLoadLayersOnCompletion
            if not box.isVisible():  # a run leaves the Log tab in front: back to the Parameters tab, by its tab
                (tabs,) = dialog.findChildren(QTabBar)
                QTest.mouseClick(tabs, Qt.LeftButton, Qt.NoModifier, tabs.tabRect(0).center())
            if box.isChecked() != load:  # on its tick box: a wide check box's middle is past its text
                option = QStyleOptionButton()
                option.initFrom(box)
                tick = box.style().subElementRect(QStyle.SE_CheckBoxIndicator, option, box)
                QTest.mouseClick(box, Qt.LeftButton, Qt.NoModifier, tick.center())
            shutil.rmtree(OUT / "batch-results", ignore_errors=True)  # each run's files are its own
            before = set(QgsProject.instance().mapLayers())
            log = dialog_log(dialog)
            logged = len(log.toPlainText())  # the dialog's log goes on from run to run
            started = time.monotonic()
            QTest.mouseClick(dialog.runButton(), Qt.LeftButton)  # returns when the batch is done
            added = [QgsProject.instance().mapLayer(i) for i in set(QgsProject.instance().mapLayers()) - before]
            runs.append({
                "load_layers": box.isChecked(),
                "log": log.toPlainText()[logged:],
                "files": {f"row{row}": sorted(p.name for p in (OUT / "batch-results" / f"row{row}").glob("*"))
                          for row in range(len(BROWSER_FILES))},
                "layers_added": sorted((layer.name(), layer.isValid(), layer.source()) for layer in added),
                "seconds": time.monotonic() - started,
            })
        self.report["processing_batch"] = {"rows": panel.batchRowCount(), "runs": runs}
        self.log("Processing batch finished")
        dialog.close()
        dialog.deleteLater()

    def processing_finished(self, successful, results):
        """The dialog's algorithmFinished: it has loaded the layers, and is still open."""
        from qgis.PyQt.QtWidgets import QProgressBar

        dialog = self.processing["dialog"]
        bars = [b.value() for b in dialog.findChildren(QProgressBar)]
        added = [QgsProject.instance().mapLayer(i) for i in set(QgsProject.instance().mapLayers())
                 - self.processing["layers_before"]]
        dialog.grab().save(str(OUT / "processing-dialog.png"))
        self.report["processing_dialog"] = {
            "successful": bool(successful),
            "results": {k: v for k, v in results.items() if isinstance(v, (int, float, str, list))},
            "log": dialog_log(dialog).toPlainText(),
            "progress": bars,
            "layers_added": sorted((layer.name(), layer.isValid(), layer.source(),
                                    layer.featureCount() if hasattr(layer, "featureCount") else None)
                                   for layer in added),
            "files": sorted(p.name for p in (OUT / "processing-results").glob("*")),
            "seconds": time.monotonic() - self.processing_started,
        }
        self.log(f"Processing dialog finished: {successful}")

    def wait_for_processing(self):
        if "processing_dialog" in self.report:
            dialog = self.processing.pop("dialog")
            dialog.close()
            dialog.deleteLater()  # before QGIS quits: a dialog outliving the application aborts its exit
            self.run_processing_batch()
            self.reinstall()
            self.state = self.after_reinstall
        elif time.monotonic() - self.processing_started > TIMEOUT_S / 2:
            log = dialog_log(self.processing["dialog"]).toPlainText()
            raise RuntimeError(f"the Processing dialog did not finish; its log: {log}")

    def reinstall(self):
        """Plugins > Manage and Install Plugins > Install from ZIP, as its button does, over the plugin in use."""
        import pyplugin_installer
        from plugin_census import plugin_census

        self.report["reinstall"] = {"before": plugin_census(iface.mainWindow())}
        self.plugin_before = weakref.ref(plugins[PLUGIN])
        pyplugin_installer.instance().installFromZipFile(os.environ["GEOPLONK_DESKTOP_ZIP"])
        self.log("installed the zip again")

    def after_reinstall(self):
        from plugin_census import plugin_census
        from qgis.utils import active_plugins

        reinstall = self.report["reinstall"]
        reinstall["after"] = plugin_census(iface.mainWindow())
        reinstall["reloaded"] = PLUGIN in active_plugins and plugins.get(PLUGIN) is not self.plugin_before()
        self.plugin = None
        gc.collect()
        reinstall["old_instance_freed"] = self.plugin_before() is None
        self.open_file_dialog()

    def open_file_dialog(self):
        """Nothing selected (no Browser selection, no features): GeoPlonk's toolbar button, clicked, opens QGIS's
        real file dialog, in which two photos are chosen by typing their names, as a user does."""
        folder = OUT / "dialog-photos"
        folder.mkdir(parents=True, exist_ok=True)
        for name in BROWSER_FILES:
            shutil.copy(Path(BROWSER_DIR) / name, folder / name)
        (folder / "notes.txt").write_text("not a photo")
        self.browser_view().selectionModel().clearSelection()
        self.photo_layer.removeSelection()
        self.plugin = plugins[PLUGIN]  # the instance the reinstall made, with its own toolbar
        self.plugin.last_report = None
        self.dialog_folder = folder
        self.report["file_dialog"] = {}
        button = self.toolbar_button(self.plugin.action_geolocate)
        if button is None:
            raise RuntimeError("no visible toolbar button for GeoPlonk's action after the reinstall")
        self.state = self.in_file_dialog
        QTimer.singleShot(0, lambda: QTest.mouseClick(button, Qt.LeftButton))  # modal: the timer goes on in it

    def in_file_dialog(self):
        from qgis.PyQt.QtWidgets import QApplication, QFileDialog, QFileSystemModel, QLineEdit, QListView

        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QFileDialog):
            return
        record = self.report["file_dialog"]
        name_box = dialog.findChild(QLineEdit, "fileNameEdit")
        view = dialog.findChild(QListView, "listView")
        if name_box is None or view is None:
            raise RuntimeError(f"not Qt's own file dialog (a platform theme's?): {dialog.metaObject().className()}")
        if "listed" not in record:  # first into the folder (as the dialog's folder tree would take it there)
            record["title"], record["filters"] = dialog.windowTitle(), dialog.nameFilters()
            record["opened_in"], record["home"] = dialog.directory().absolutePath(), os.path.expanduser("~")
            self.folder_loaded = False
            dialog.findChild(QFileSystemModel).directoryLoaded.connect(self.dialog_folder_loaded)
            dialog.setDirectory(str(self.dialog_folder))
            record["listed"] = None
            self.dialog_entered = time.monotonic()
            return
        if not self.folder_loaded and time.monotonic() - self.dialog_entered < 15:
            return  # the dialog is still reading the folder: every file of it, filtered, before it is listed
        model, root = view.model(), view.rootIndex()
        record["listed"] = sorted(model.index(r, 0, root).data() for r in range(model.rowCount(root)))
        record["directory"] = dialog.directory().absolutePath()
        name_box.clear()
        QTest.keyClicks(name_box, " ".join(f'"{name}"' for name in BROWSER_FILES))
        QTest.keyClick(name_box, Qt.Key_Return)
        self.log("chose two photos in the file dialog")
        self.state = self.wait_for_file_dialog_job

    def dialog_folder_loaded(self, path):
        if os.path.exists(path) and os.path.samefile(path, self.dialog_folder):
            self.folder_loaded = True

    def wait_for_file_dialog_job(self):
        report = self.plugin.last_report
        if report is None:
            return
        from qgis.core import QgsSettings

        self.report["file_dialog"]["job"] = {"ok": report.ok, "failed": report.failed, "error": report.error_title,
                                             "paths": list(getattr(self.plugin.task, "paths", []))}
        key = sys.modules[type(self.plugin).__module__].LAST_PHOTO_FOLDER
        self.report["file_dialog"]["remembered"] = QgsSettings().value(key, "")
        self.open_settings()

    def open_settings(self):
        """GeoPlonk's settings action (Plugins > GeoPlonk): Test connection, pick the model it lists, change the
        samples, OK; the settings are saved as the dialog showed them."""
        self.report["settings_dialog"] = {}
        self.settings_closed = False
        self.state = self.in_settings
        self.settings_opened = time.monotonic()

        def open_and_wait():
            self.plugin.action_settings.trigger()  # returns once the modal dialog is closed and the settings saved
            self.settings_closed = True

        QTimer.singleShot(0, open_and_wait)

    def in_settings(self):
        from qgis.PyQt.QtWidgets import QApplication, QDialogButtonBox

        dialog = QApplication.activeModalWidget()
        record = self.report["settings_dialog"]
        if dialog is None or dialog.objectName() != "GeoPlonkSettingsDialog":
            return
        models = dialog.model
        if "tested" not in record:
            QTest.mouseClick(dialog.test_button, Qt.LeftButton)
            record["tested"] = True
            return
        listed = [models.itemText(i) for i in range(models.count())]
        if "earth-tiles" not in listed and time.monotonic() - self.settings_opened < 60:
            return  # the test runs in the background
        record["models"], record["info"] = listed, dialog.info_label.text()
        record["picked_before"] = models.currentIndex()
        models.setCurrentIndex(models.findText("earth-tiles"))
        record["picked"] = [models.currentIndex(), models.currentText()]
        record["card"] = dialog.model_card.text()
        dialog.samples.selectAll()
        QTest.keyClicks(dialog.samples, "512")
        QTest.mouseClick(dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.Ok), Qt.LeftButton)
        self.state = self.after_settings

    def after_settings(self):
        if not self.settings_closed:
            return
        settings = sys.modules[type(self.plugin).__module__.rsplit(".", 1)[0] + ".settings"].Settings.load()
        self.report["settings_dialog"]["saved"] = {"model": settings.model, "samples": settings.samples}
        self.plugin = None
        self.finish()

    def open_case_report(self):
        """Right-click the first result group in the real Layers panel, then click "Open case report"."""
        from tree_menu import right_click_and_choose

        view = iface.layerTreeView()
        group = self.result_groups()[0]
        index = view.layerTreeModel().node2index(group)
        view.scrollTo(index)
        opened: list = []
        self.plugin.open_file = opened.append  # no web browser under Xvfb
        entries = right_click_and_choose(view, index, "Open case report")
        self.report["case_report"] = {"group": group.name(), "menu": entries, "opened": [str(p) for p in opened]}
        self.log(f"case report: {opened}")

    # -- what QGIS shows -------------------------------------------------------------------

    def result_groups(self):
        root = QgsProject.instance().layerTreeRoot()
        return [n for n in root.children() if isinstance(n, QgsLayerTreeGroup) and n.customProperty("geoplonk/result")]

    def describe(self):
        main = iface.mainWindow()
        canvas = iface.mapCanvas()
        top_left = canvas.mapTo(main, canvas.rect().topLeft())
        self.report["window"] = {"width": main.width(), "height": main.height()}
        self.report["canvas_rect"] = [top_left.x(), top_left.y(), canvas.width(), canvas.height()]
        extent = canvas.extent()
        self.report["canvas_extent"] = [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()]
        groups = []
        for group in self.result_groups():
            children = []
            for node in group.findLayers():
                layer = node.layer()
                entry = {
                    "name": node.name(),
                    "role": str(layer.customProperty("geoplonk/role", "")) if layer else "",
                    "map_tip": layer.mapTipTemplate() if layer and hasattr(layer, "mapTipTemplate") else "",
                    "labels": bool(layer and hasattr(layer, "labelsEnabled") and layer.labelsEnabled()),
                    "visible": node.isVisible(),
                    "valid": bool(layer and layer.isValid()),
                    "source": layer.source() if layer else "",
                    "renderer": layer.renderer().type() if layer and layer.renderer() else "",
                    "features": layer.featureCount() if layer and hasattr(layer, "featureCount") else None,
                }
                if isinstance(layer, QgsRasterLayer):
                    shader = layer.renderer().shader().rasterShaderFunction()
                    entry["ramp_colours"] = [item.color.name() for item in shader.colorRampItemList()]
                    entry["opacity"] = layer.opacity()
                    ramp = shader.sourceColorRamp()
                    if ramp is not None:
                        entry["ramp_samples"] = [ramp.color(i / 63).name() for i in range(64)]
                if entry["role"] == "claims" and layer is not None:
                    from qgis.core import QgsExpression, QgsExpressionContext, QgsExpressionContextUtils

                    context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
                    context.setFeature(next(layer.getFeatures()))
                    entry["map_tip_text"] = QgsExpression.replaceExpressionText(layer.mapTipTemplate(), context)
                    label = QgsExpression(layer.labeling().settings().fieldName)
                    entry["label_text"] = str(label.evaluate(context))
                if entry["role"] == "credible regions" and layer is not None:
                    symbols = layer.renderer().symbols(QgsRenderContext())
                    entry["outline_colours"] = sorted({s.symbolLayer(0).strokeColor().name() for s in symbols})
                children.append(entry)
            groups.append({"name": group.name(), "photo": group.name().split(" · ")[0], "visible": group.isVisible(),
                           "layers": children})
        self.report["groups"] = groups
        labelling = {}
        for group in self.result_groups()[:1]:
            for node in group.findLayers():
                layer = node.layer()
                if layer is not None and hasattr(layer, "labelsEnabled") and layer.labelsEnabled():
                    settings = layer.labeling().settings()
                    labelling[str(layer.customProperty("geoplonk/role", ""))] = {
                        "priority": settings.priority, "display_all": settings.displayAll,
                        "placement": int(settings.placement), "expression": settings.fieldName,
                    }
        self.report["labelling"] = labelling
        view = iface.layerTreeView()
        model = view.model()
        rows = []
        for row in range(model.rowCount()):
            index = model.index(row, 0)
            rect = view.visualRect(index)
            rows.append({"text": model.data(index, Qt.DisplayRole), "shown": view.isVisible() and rect.isValid()})
        self.report["layers_panel"] = {"visible": view.isVisible(), "rows": rows}
        self.report["canvas_layers"] = [layer.name() for layer in canvas.layers()]
        self.report["zoomed_extent"] = self.zoomed_extent
        self.report["tree_order"] = [node.name() for node in QgsProject.instance().layerTreeRoot().children()]
        self.report["basemap"] = [
            {"name": layer.name(), "source": layer.source(), "valid": layer.isValid()}
            for layer in QgsProject.instance().mapLayers().values() if layer.customProperty("geoplonk/basemap")
        ]

    def finish(self):
        self.timer.stop()
        self.report["elapsed_s"] = time.monotonic() - self.t0
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "report.json").write_text(json.dumps(self.report, indent=2, default=str), encoding="utf-8")
        project = QgsProject.instance()
        project.removeAllMapLayers()
        project.layerTreeRoot().removeAllChildren()
        project.setDirty(False)
        QTimer.singleShot(200, iface.actionExit().trigger)


def dialog_log(dialog):
    """A Processing dialog's Log tab."""
    from qgis.PyQt.QtWidgets import QTextEdit

    (log,) = [w for w in dialog.findChildren(QTextEdit) if w.objectName() == "txtLog"]
    return log


sys.geoplonk_desktop_run = DesktopRun()  # keep it alive: this script's namespace may be dropped
