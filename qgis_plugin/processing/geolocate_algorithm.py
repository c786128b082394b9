"""Processing algorithm `geoplonk:geolocatephotos`: geolocate a folder or a layer of photos in batch.

The same algorithm serves the toolbox, batch mode, the graphical modeler and
`qgis_process`.  It talks to the model server through the shared client, writes
`<stem>.tif` + `<stem>.gpkg` per photo into the output folder and one merged
point layer of best guesses.  A photo that fails is reported and skipped; the
run fails only when no photo succeeds.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QCoreApplication, QVariant

from geoplonk_service.output_files import unique_stems
from geoplonk_service.protocol import MAX_IMAGE_BYTES

from ..settings import Settings, optional_float
from ..sources import detect_photo_field, is_image_path, photos_in_folder, resolve_photo_path

BATCH_PHOTOS = 8  # photos per request: bounds memory and keeps results flowing photo by photo
PROBE_TIMEOUT_S = 3.0
DEFAULT_OUTPUT_NAME = "best_guesses.gpkg"
LOCAL_SERVER_IDLE_S = 900.0

# ---------------------------------------------------------------------------------------------
# Pure helpers (no QGIS): field detection, result rows.  Path rules live in sources.py, output names in
# service/naming.py.


def guess_photo_field(field_names: Iterable[str], sample_values: dict[str, list[Any]] | None = None) -> str | None:
    """The plugin's field detection, then any field whose sample values all look like image paths."""
    names = list(field_names)
    found = detect_photo_field(names)
    if found is not None:
        return found
    for name in names:
        values = [v for v in (sample_values or {}).get(name, []) if isinstance(v, str) and v]
        if values and all(is_image_path(v) for v in values):
            return name
    return None


def best_guess_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The merged layer's attributes from one result summary (see the result contract)."""
    best = summary.get("best_guess") or {}
    top = summary.get("top_places") or []
    exif = summary.get("exif") or None
    return {
        "lat": float(best.get("lat")),
        "lon": float(best.get("lon")),
        "localizability": _maybe_float(summary.get("localizability")),
        "country": str(best.get("country") or ""),
        "place": str(best.get("place") or ""),
        "top_probability": _maybe_float(top[0].get("probability")) if top else None,
        "exif_error_km": _maybe_float(exif.get("error_km")) if isinstance(exif, dict) else None,
        "model": str(summary.get("model") or ""),
    }


def _maybe_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# A local server shared by the runs of this QGIS process (batch mode runs the algorithm many times).

_server_lock = threading.Lock()
_local_server = None


def stop_local_server() -> None:
    """Stop the server this module started, if any (the plugin's unload() may call this)."""
    global _local_server
    with _server_lock:
        if _local_server is not None:
            _local_server.stop()
            _local_server = None


atexit.register(stop_local_server)


def resolve_endpoint(endpoint: str | None, settings, feedback: QgsProcessingFeedback) -> str:
    """The endpoint of a server that answers.

    `endpoint` (the algorithm's ENDPOINT parameter) when given; else, inside QGIS with the
    plugin loaded, the plugin's own connection (its local server is shared, not started twice);
    else the configured endpoint, falling back to a local server started with the configured command.
    """
    from geoplonk_service.client import GeoPlonkClient, ServerError, ServerUnavailable
    from geoplonk_service.launcher import ServerStartError

    plugin = _running_plugin()
    if not endpoint and plugin is not None:
        try:
            client = plugin.connect(settings)
        except (ServerUnavailable, ServerStartError) as exc:
            raise QgsProcessingException(f"No GeoPlonk server: {exc}") from None
        try:
            feedback.pushInfo(f"GeoPlonk server at {client.endpoint}: {_describe(client.info())}")
        except (ServerUnavailable, ServerError) as exc:
            raise QgsProcessingException(f"The GeoPlonk server at {client.endpoint} does not answer: {exc}") from None
        finally:
            client.close()
        return client.endpoint
    endpoint = endpoint or settings.endpoint
    try:
        with GeoPlonkClient(endpoint, timeout_s=PROBE_TIMEOUT_S, retries=0) as client:
            feedback.pushInfo(f"GeoPlonk server at {endpoint}: {_describe(client.info())}")
        return endpoint
    except ServerUnavailable:
        if not settings.auto_start:
            raise QgsProcessingException(
                f"No GeoPlonk server answers at {endpoint}. Start one with `geoplonk serve`, "
                "or enable auto-start in GeoPlonk settings."
            ) from None
    return _start_local_server(settings.start_command, feedback)


def _start_local_server(command: str, feedback: QgsProcessingFeedback) -> str:
    """Start (once per QGIS process) a local server for runs without the plugin (qgis_process, scripts)."""
    global _local_server
    from geoplonk_service.launcher import ServerStartError, start_local_server

    with _server_lock:
        if _local_server is not None and _local_server.running:
            return _local_server.endpoint
        feedback.pushInfo(f"Starting a local GeoPlonk server: {command}")
        try:
            _local_server = start_local_server(command, idle_timeout=LOCAL_SERVER_IDLE_S)
        except ServerStartError as exc:
            raise QgsProcessingException(f"Could not start the local GeoPlonk server: {exc}") from None
        feedback.pushInfo(f"Local GeoPlonk server ready at {_local_server.endpoint}")
        return _local_server.endpoint


def _running_plugin():
    """The loaded GeoPlonk plugin object (desktop QGIS), or None (qgis_process, scripts, tests)."""
    try:
        from qgis.utils import plugins
    except ImportError:
        return None
    plugin = plugins.get(__package__.split(".")[0])
    return plugin if callable(getattr(plugin, "connect", None)) else None


def _describe(info: dict[str, Any]) -> str:
    parts = [f"{k} {info[k]}" for k in ("device", "default_model", "software_version") if info.get(k)]
    return ", ".join(parts) or "ready"


# ---------------------------------------------------------------------------------------------
# Styling rasters loaded on completion, the way the plugin styles them.

_postprocessors: list = []  # QGIS keeps raw pointers: Python must keep the objects alive


class _StyleDensityRaster(QgsProcessingLayerPostProcessorInterface):
    """Gives a raster QGIS loads after the run the plugin's density style (layers.style_density)."""

    def __init__(self, max_probability: float | None = None):
        super().__init__()
        self.max_probability = max_probability

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS naming
        try:
            from ..layers import style_density

            style_density(layer, max_probability=self.max_probability)
        except Exception as exc:  # a styling problem must not lose the result
            feedback.reportError(f"Could not style {layer.name()}: {exc}", False)


# ---------------------------------------------------------------------------------------------


class GeolocatePhotosAlgorithm(QgsProcessingAlgorithm):
    """Geolocate photos from a layer's path field or a folder; one raster per photo + merged best guesses."""

    INPUT = "INPUT"
    PHOTO_FIELD = "PHOTO_FIELD"
    FOLDER = "FOLDER"
    RECURSIVE = "RECURSIVE"
    MODEL = "MODEL"
    SAMPLES = "SAMPLES"
    GUIDANCE = "GUIDANCE"
    STEPS = "STEPS"
    RESOLUTION = "RESOLUTION"
    ENDPOINT = "ENDPOINT"
    LOAD_RASTERS = "LOAD_RASTERS"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    OUTPUT = "OUTPUT"
    RASTERS = "RASTERS"
    VECTORS = "VECTORS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("GeoPlonk", text)

    def createInstance(self):  # noqa: N802
        return GeolocatePhotosAlgorithm()

    def name(self) -> str:
        return "geolocatephotos"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Geolocate photos")

    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802
        return ""

    def tags(self) -> list[str]:
        return ["geolocation", "photo", "image", "plonk", "where", "probability", "exif"]

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Estimates where on Earth each photo was taken, with the GeoPlonk model server.\n\n"
            "Photos come from a layer with a photo path field (e.g. from 'Import geotagged photos'; "
            "the field is detected when left empty) or from a folder.\n\n"
            "For each photo, <stem>.tif (probability per cell, summing to 1) and <stem>.gpkg (samples, "
            "top places, credible regions, best guess, EXIF truth) are written to the output folder. "
            "The output layer holds one best guess per photo with its localizability, country, place, "
            "top place probability and, when the photo has GPS EXIF, the error in km.\n\n"
            "The server endpoint and the local start command come from the GeoPlonk settings; a photo "
            "that cannot be read fails alone."
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        defaults = Settings.load()
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.INPUT, self.tr("Photo layer"), [QgsProcessing.TypeVector], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.PHOTO_FIELD,
                self.tr("Photo path field (detected when empty)"),
                parentLayerParameterName=self.INPUT,
                type=QgsProcessingParameterField.String,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.FOLDER, self.tr("Or a photo folder"), behavior=QgsProcessingParameterFile.Folder, optional=True
            )
        )
        self.addParameter(QgsProcessingParameterBoolean(self.RECURSIVE, self.tr("Include sub-folders"), False))
        self.addParameter(
            QgsProcessingParameterString(
                self.MODEL, self.tr("Model (empty: the server's default)"), defaults.model, optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.SAMPLES,
                self.tr("Samples"),
                QgsProcessingParameterNumber.Integer,
                defaults.samples,
                False,
                16,
                65536,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.GUIDANCE,
                self.tr("Guidance (cfg); empty: the model's calibrated value"),
                QgsProcessingParameterNumber.Double,
                defaults.cfg,
                True,
                -1,
                20,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.STEPS,
                self.tr("Solver steps"),
                QgsProcessingParameterNumber.Integer,
                defaults.steps,
                False,
                1,
                1000,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.RESOLUTION,
                self.tr("Raster resolution (degrees)"),
                QgsProcessingParameterNumber.Double,
                defaults.resolution,
                False,
                0.05,
                10,
            )
        )
        endpoint = QgsProcessingParameterString(
            self.ENDPOINT, self.tr("Server endpoint (empty: from GeoPlonk settings)"), "", optional=True
        )
        endpoint.setFlags(endpoint.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(endpoint)
        load = QgsProcessingParameterBoolean(self.LOAD_RASTERS, self.tr("Add the rasters to the project"), True)
        load.setFlags(load.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(load)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT,
                self.tr("Best guesses (empty: best_guesses.gpkg in the output folder)"),
                QgsProcessing.TypeVectorPoint,
                optional=True,
                createByDefault=True,
            )
        )
        self.addOutput(QgsProcessingOutputMultipleLayers(self.RASTERS, self.tr("Probability rasters")))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.VECTORS, self.tr("Result GeoPackages")))
        self.addOutput(QgsProcessingOutputNumber(self.SUCCEEDED, self.tr("Photos geolocated")))
        self.addOutput(QgsProcessingOutputNumber(self.FAILED, self.tr("Photos failed")))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        has_layer = parameters.get(self.INPUT) not in (None, "")
        has_folder = bool(self.parameterAsFile(parameters, self.FOLDER, context))
        if not has_layer and not has_folder:
            return False, self.tr("Give a photo layer or a photo folder.")
        return super().checkParameterValues(parameters, context)

    # -- inputs ---------------------------------------------------------------------------------

    def _photos_from_layer(self, parameters, context, feedback) -> list[Path]:
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        names = [f.name() for f in source.fields()]
        field = self.parameterAsString(parameters, self.PHOTO_FIELD, context)
        if not field:
            samples: dict[str, list[Any]] = {n: [] for n in names}
            for i, feature in enumerate(source.getFeatures()):
                if i >= 5:
                    break
                for n in names:
                    samples[n].append(feature[n])
            field = guess_photo_field(names, samples)
            if field is None:
                raise QgsProcessingException(
                    self.tr("No photo path field found among: {}. Choose one in 'Photo path field'.").format(
                        ", ".join(names)
                    )
                )
            feedback.pushInfo(f"Photo paths from field '{field}'")
        elif field not in names:
            raise QgsProcessingException(f"The layer has no field '{field}'")
        base_dir = self._layer_folder(parameters, context)
        photos = []
        for feature in source.getFeatures():
            path = resolve_photo_path(feature[field], base_dir)
            if path is None:
                feedback.reportError(f"Feature {feature.id()}: empty photo path", False)
            else:
                photos.append(Path(path))
        return photos

    def _layer_folder(self, parameters, context) -> str | None:
        """The folder relative photo paths resolve from: the layer file's, else the project's."""
        layer = self.parameterAsVectorLayer(parameters, self.INPUT, context)
        if layer is not None:
            path = layer.source().split("|")[0]
            if os.path.exists(path):
                return os.path.dirname(path)
        project = context.project()
        return (project.homePath() if project is not None else "") or None

    def _photos_from_folder(self, parameters, context) -> list[Path]:
        folder = self.parameterAsFile(parameters, self.FOLDER, context)
        if not os.path.isdir(folder):
            raise QgsProcessingException(f"The photo folder {folder!r} does not exist")
        recursive = self.parameterAsBoolean(parameters, self.RECURSIVE, context)
        return [Path(p) for p in photos_in_folder(folder, recursive)]

    @staticmethod
    def _read(chunk: list[tuple[Path, str]], feedback) -> list[tuple[Path, str, bytes]]:
        """(path, stem, bytes) for every readable photo of `chunk`; unreadable ones are reported."""
        items = []
        for path, stem in chunk:
            try:
                size = path.stat().st_size
                if size > MAX_IMAGE_BYTES:
                    raise OSError(f"{size / 1e6:.0f} MB, over the {MAX_IMAGE_BYTES / 1e6:.0f} MB limit")
                items.append((path, stem, path.read_bytes()))
            except OSError as exc:
                feedback.reportError(f"{path.name}: cannot read the file ({exc.strerror or exc})", False)
        return items

    # -- run ------------------------------------------------------------------------------------

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback):  # noqa: N802
        from geoplonk_service.client import GeoPlonkClient, ServerError, ServerUnavailable

        settings = Settings.load()
        if parameters.get(self.INPUT) not in (None, ""):
            photos = self._photos_from_layer(parameters, context, feedback)
        else:
            photos = self._photos_from_folder(parameters, context)
        if not photos:
            raise QgsProcessingException(self.tr("No photos to geolocate."))
        total = len(photos)
        feedback.pushInfo(f"{total} photo(s) to geolocate")

        out_dir = Path(self.parameterAsString(parameters, self.OUTPUT_FOLDER, context))
        out_dir.mkdir(parents=True, exist_ok=True)
        fields = _output_fields()
        if parameters.get(self.OUTPUT) in (None, ""):  # qgis_process / scripts: keep it with the rasters
            parameters = {**parameters, self.OUTPUT: str(out_dir / DEFAULT_OUTPUT_NAME)}
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, QgsWkbTypes.Point, QgsCoordinateReferenceSystem("EPSG:4326")
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))

        options = self._options(parameters, context, settings)
        endpoint = resolve_endpoint(self.parameterAsString(parameters, self.ENDPOINT, context), settings, feedback)
        load = self.parameterAsBoolean(parameters, self.LOAD_RASTERS, context)
        rasters: list[str] = []
        vectors: list[str] = []
        finished = 0
        named = list(zip(photos, unique_stems(photos), strict=True))

        for start in range(0, total, BATCH_PHOTOS):
            if feedback.isCanceled():
                break
            chunk = named[start : start + BATCH_PHOTOS]
            batch = self._read(chunk, feedback)
            finished += len(chunk) - len(batch)

            def on_progress(progress: dict, _done=finished, _n=len(batch)) -> None:
                done, of = progress.get("done"), progress.get("total")
                if isinstance(done, (int, float)) and isinstance(of, (int, float)) and of > 0:
                    feedback.setProgress(100.0 * (_done + min(max(done / of, 0.0), 1.0) * _n) / total)
                if progress.get("stage"):
                    feedback.setProgressText(f"{progress['stage']} {progress.get('name') or ''}".strip())

            def on_result(result, _batch=batch) -> None:
                nonlocal finished
                path, stem, _ = _batch[result.index]
                if result.status == "cancelled":
                    return
                finished += 1
                feedback.setProgress(100.0 * finished / total)
                if not result.ok:
                    err = result.error or {}
                    feedback.reportError(f"{path.name}: {err.get('message') or err.get('code') or 'failed'}", False)
                    return
                saved = result.save(out_dir, stem=stem)
                tif, gpkg = str(saved["geotiff"]), str(saved["gpkg"])
                rasters.append(tif)
                vectors.append(gpkg)
                sink.addFeature(_feature(fields, path, result.summary, tif, gpkg), QgsFeatureSink.FastInsert)
                if load:
                    raster = (result.summary or {}).get("raster") or {}
                    self._load_on_completion(context, tif, stem, raster.get("max_probability"))
                feedback.pushInfo(_result_line(path, result.summary))

            if not batch:
                continue
            try:
                with GeoPlonkClient(endpoint, timeout_s=settings.timeout_s) as client:
                    client.geolocate(
                        [(item[0].name, item[2]) for item in batch],
                        options,
                        on_progress=on_progress,
                        on_result=on_result,
                        is_cancelled=feedback.isCanceled,
                    )
            except ServerUnavailable as exc:
                raise QgsProcessingException(f"The GeoPlonk server at {endpoint} stopped answering: {exc}") from None
            except ServerError as exc:
                raise QgsProcessingException(
                    f"The GeoPlonk server refused the request ({exc.code}): {exc.message}"
                ) from None

        succeeded = len(rasters)
        failed = finished - succeeded
        if feedback.isCanceled():
            feedback.pushInfo(f"Cancelled: {succeeded} of {total} photo(s) geolocated")
        elif succeeded == 0:
            raise QgsProcessingException(f"None of the {total} photo(s) could be geolocated; see the errors above.")
        feedback.pushInfo(f"{succeeded} photo(s) geolocated, {failed} failed; results in {out_dir}")
        return {
            self.OUTPUT: dest_id,
            self.OUTPUT_FOLDER: str(out_dir),
            self.RASTERS: rasters,
            self.VECTORS: vectors,
            self.SUCCEEDED: succeeded,
            self.FAILED: failed,
        }

    def _options(self, parameters, context, settings: Settings) -> dict[str, Any]:
        options: dict[str, Any] = {
            "samples": self.parameterAsInt(parameters, self.SAMPLES, context),
            "steps": self.parameterAsInt(parameters, self.STEPS, context),
            "resolution": self.parameterAsDouble(parameters, self.RESOLUTION, context),
            "levels": list(settings.levels),
        }
        # left out: the saved setting; empty (NULL): the model's calibrated guidance
        cfg = optional_float(parameters.get(self.GUIDANCE, settings.cfg))
        if cfg is not None:
            options["cfg"] = cfg
        model = (self.parameterAsString(parameters, self.MODEL, context) or "").strip()
        if model:
            options["model"] = model
        return options

    def _load_on_completion(
        self, context: QgsProcessingContext, path: str, name: str, max_probability: float | None
    ) -> None:
        details = QgsProcessingContext.LayerDetails(name, context.project(), self.RASTERS)
        post = _StyleDensityRaster(max_probability)
        _postprocessors.append(post)
        details.setPostProcessor(post)
        context.addLayerToLoadOnCompletion(path, details)


def _output_fields() -> QgsFields:
    fields = QgsFields()
    for name, kind in (
        ("photo", QVariant.String),
        ("path", QVariant.String),
        ("lat", QVariant.Double),
        ("lon", QVariant.Double),
        ("localizability", QVariant.Double),
        ("country", QVariant.String),
        ("place", QVariant.String),
        ("top_probability", QVariant.Double),
        ("exif_error_km", QVariant.Double),
        ("model", QVariant.String),
        ("raster", QVariant.String),
        ("gpkg", QVariant.String),
    ):
        fields.append(QgsField(name, kind))
    return fields


def _feature(fields: QgsFields, path: Path, summary: dict[str, Any], tif: str, gpkg: str) -> QgsFeature:
    row = best_guess_row(summary)
    feature = QgsFeature(fields)
    feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(row["lon"], row["lat"])))
    values = {"photo": path.name, "path": str(path), "raster": tif, "gpkg": gpkg, **row}
    feature.setAttributes([values.get(fields.at(i).name()) for i in range(fields.count())])
    return feature


def _result_line(path: Path, summary: dict[str, Any]) -> str:
    row = best_guess_row(summary)
    where = ", ".join(p for p in (row["place"], row["country"]) if p) or "?"
    text = f"{path.name}: {row['lat']:.3f}, {row['lon']:.3f} ({where})"
    if row["localizability"] is not None:
        text += f", localizability {row['localizability']:.2f}"
    if row["exif_error_km"] is not None:
        text += f", {row['exif_error_km']:.0f} km from EXIF GPS"
    return text
