"""Processing algorithm `geoplonk:geolocatephotos`: geolocate a folder or a layer of photos in batch.

One algorithm for the toolbox, batch mode, the graphical modeler and `qgis_process`. It holds the parameters
and outputs only; the work is the toolbar's (Settings, the shared client, server manager and result rows).
Per photo it writes `<stem>.tif` + `<stem>.gpkg`, and one merged point layer of best guesses. A photo that
fails is reported and skipped; the run fails only when no photo succeeds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import replace
from pathlib import Path

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
    QgsProcessingOutputFile,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProperty,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QCoreApplication, QVariant

from geoplonk_service import protocol as P
from geoplonk_service.output_files import unique_stems
from geoplonk_service.photos import photos_in_folder
from geoplonk_service.result_rows import RESULT_FIELDS, describe_row, summary_row

from .. import messages
from ..claims import CLAIM_FIELDS, claim_fields
from ..claims import quote as claims_quote
from ..progress import JobProgress
from ..settings import SOLVER_HELP, Settings, optional_float, solver_label
from ..sources import guess_photo_field, layer_folder, resolve_photo_path
from . import analyst_parameters

DEFAULT_OUTPUT_NAME = "best_guesses.gpkg"
FIELD_TYPES = {float: QVariant.Double, int: QVariant.Int, str: QVariant.String}
# The best-guess layer's attributes: the result rows' columns (every feature is a photo that succeeded).
LAYER_FIELDS = tuple((name, kind) for name, kind in RESULT_FIELDS if name not in ("status", "error")) + CLAIM_FIELDS


def running_plugin_servers():
    """The loaded plugin's LocalServerManager (desktop QGIS), or None (qgis_process, scripts, tests)."""
    try:
        from qgis.utils import plugins
    except ImportError:
        return None
    return getattr(plugins.get(__package__.split(".")[0]), "servers", None)


def number_parameter(name: str, label: str, option: P.NumberOption, default, optional: bool = False):
    """A number parameter with the protocol's type and range for `option`."""
    kind = QgsProcessingParameterNumber.Integer if option.kind is int else QgsProcessingParameterNumber.Double
    return QgsProcessingParameterNumber(name, label, kind, default, optional, option.minimum, option.maximum)


def solver_parameter(name: str, label: str, default: str):
    """An enum parameter over the protocol's solvers (its value: the index in P.SOLVERS)."""
    index = P.SOLVERS.index(default if default in P.SOLVERS else P.DEFAULT_SOLVER)
    parameter = QgsProcessingParameterEnum(name, label, [solver_label(s) for s in P.SOLVERS], False, index)
    parameter.setHelp(SOLVER_HELP)
    return parameter


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


class GeolocatePhotosAlgorithm(QgsProcessingAlgorithm):
    """Geolocate photos from a layer's path field or a folder; one raster per photo + merged best guesses."""

    INPUT = "INPUT"
    PHOTO_FIELD = "PHOTO_FIELD"
    FOLDER = "FOLDER"
    RECURSIVE = "RECURSIVE"
    MODEL = "MODEL"
    SAMPLES = "SAMPLES"
    GUIDANCE = "GUIDANCE"
    SOLVER = "SOLVER"
    STEPS = "STEPS"
    RESOLUTION = "RESOLUTION"
    ENDPOINT = "ENDPOINT"
    SERVER_COMMAND = "SERVER_COMMAND"
    LOAD_RASTERS = "LOAD_RASTERS"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    OUTPUT = "OUTPUT"
    RASTERS = "RASTERS"
    VECTORS = "VECTORS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    JOINT_RASTER = "JOINT_RASTER"
    JOINT_GPKG = "JOINT_GPKG"

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
        return ["geolocation", "photo", "image", "plonk", "where", "probability", "exif", "claim", "verify",
                "area of interest", "joint", "report"]

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Estimates where on Earth each photo was taken, with the GeoPlonk model server.\n\n"
            "Photos come from a layer with a photo path field (e.g. from 'Import geotagged photos'; "
            "the field is detected when left empty) or from a folder.\n\n"
            "For each photo, <stem>.tif (probability per cell, summing to 1) and <stem>.gpkg (samples, "
            "top places, credible regions, best guess, EXIF truth) are written to the output folder. "
            "The output layer holds one best guess per photo with its localizability, country, place, "
            "the first top place with the probabilities of lying within 100 and 500 km of it, its basin share "
            "and, when the photo has GPS EXIF, the error in km. It is kept as best_guesses.gpkg in the output "
            "folder unless another file is chosen (a temporary layer too, so that it outlives the project).\n\n"
            "The server endpoint and the local start command come from the GeoPlonk settings; a photo "
            "that cannot be read fails alone.\n\n"
        ) + self.tr(analyst_parameters.HELP)

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
        self.addParameter(number_parameter(self.SAMPLES, self.tr("Samples"), P.SAMPLES, defaults.samples))
        guidance = self.tr("Guidance (cfg); empty: the model's calibrated value")
        self.addParameter(number_parameter(self.GUIDANCE, guidance, P.CFG, defaults.cfg, optional=True))
        self.addParameter(solver_parameter(self.SOLVER, self.tr("Solver"), defaults.solver))
        self.addParameter(number_parameter(self.STEPS, self.tr("Solver steps"), P.STEPS, defaults.steps))
        resolution = self.tr("Raster resolution (degrees)")
        self.addParameter(number_parameter(self.RESOLUTION, resolution, P.RESOLUTION, defaults.resolution))
        analyst_parameters.add_parameters(self)
        endpoint = QgsProcessingParameterString(
            self.ENDPOINT, self.tr("Server endpoint (empty: from GeoPlonk settings)"), "", optional=True
        )
        endpoint.setFlags(endpoint.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(endpoint)
        command = QgsProcessingParameterString(
            self.SERVER_COMMAND,
            self.tr("Command that starts a local server (empty: GeoPlonk settings, else $GEOPLONK_SERVER_COMMAND)"),
            "",
            optional=True,
        )
        command.setFlags(command.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(command)
        load = QgsProcessingParameterBoolean(
            self.LOAD_RASTERS, self.tr("Add the rasters to the project when the best guesses are opened"), True)
        load.setFlags(load.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(load)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT,
                self.tr("Best guesses (default: best_guesses.gpkg in the output folder)"),
                QgsProcessing.TypeVectorPoint,
                optional=True,
                createByDefault=True,
            )
        )
        self.addOutput(QgsProcessingOutputMultipleLayers(self.RASTERS, self.tr("Probability rasters")))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.VECTORS, self.tr("Result GeoPackages")))
        self.addOutput(QgsProcessingOutputNumber(self.SUCCEEDED, self.tr("Photos geolocated")))
        self.addOutput(QgsProcessingOutputNumber(self.FAILED, self.tr("Photos failed")))
        self.addOutput(QgsProcessingOutputFile(self.JOINT_RASTER, self.tr("Joint map raster")))
        self.addOutput(QgsProcessingOutputFile(self.JOINT_GPKG, self.tr("Joint map GeoPackage")))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        has_layer = parameters.get(self.INPUT) not in (None, "")
        has_folder = bool(self.parameterAsFile(parameters, self.FOLDER, context))
        if not has_layer and not has_folder:
            return False, self.tr("Give a photo layer or a photo folder.")
        return super().checkParameterValues(parameters, context)

    # -- inputs ---------------------------------------------------------------------------------

    def _best_guess_destination(self, value, out_dir: Path):
        """The best-guess layer goes where the user put it, else to best_guesses.gpkg beside the rasters: also
        when the destination is a temporary layer, Processing's dialog's default, which would vanish with the
        project while every other result is on disk. The dialog still loads it, as "Best guesses"."""
        default = str(out_dir / DEFAULT_OUTPUT_NAME)
        if value in (None, "", QgsProcessing.TEMPORARY_OUTPUT):  # qgis_process, scripts
            return default
        if not isinstance(value, QgsProcessingOutputLayerDefinition):
            return value
        kept = QgsProcessingOutputLayerDefinition(value)
        if value.sink.propertyType() == QgsProperty.StaticProperty and value.sink.staticValue() in (
                None, "", QgsProcessing.TEMPORARY_OUTPUT):
            kept.sink = QgsProperty.fromValue(default)
        if kept.destinationName in ("", self.parameterDefinition(self.OUTPUT).description()):
            kept.destinationName = self.tr("Best guesses")
        return kept

    def _settings(self, parameters, context) -> Settings:
        """The saved settings, overridden by the parameters: what the toolbar would run with."""
        settings = Settings.load()
        command = (self.parameterAsString(parameters, self.SERVER_COMMAND, context) or "").strip()
        return replace(
            settings,
            start_command=command or settings.start_command,
            auto_start=True if command else settings.auto_start,
            endpoint=self.parameterAsString(parameters, self.ENDPOINT, context) or settings.endpoint,
            model=(self.parameterAsString(parameters, self.MODEL, context) or "").strip(),
            samples=self.parameterAsInt(parameters, self.SAMPLES, context),
            solver=P.SOLVERS[self.parameterAsEnum(parameters, self.SOLVER, context)],
            steps=self.parameterAsInt(parameters, self.STEPS, context),
            resolution=self.parameterAsDouble(parameters, self.RESOLUTION, context),
            # left out: the saved guidance; empty (NULL): the model's calibrated one
            cfg=optional_float(parameters.get(self.GUIDANCE, settings.cfg)),
        )

    def _photos_from_layer(self, parameters, context, feedback) -> list[Path]:
        source = self.parameterAsSource(parameters, self.INPUT, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.INPUT))
        names = [f.name() for f in source.fields()]
        field = self.parameterAsString(parameters, self.PHOTO_FIELD, context)
        if not field:
            first = list(itertools.islice(source.getFeatures(), 5))  # sample values: do they look like paths?
            field = guess_photo_field(names, {n: [f[n] for f in first] for n in names})
            if field is None:
                raise QgsProcessingException(
                    self.tr("No photo path field found among: {}. Choose one in 'Photo path field'.").format(
                        ", ".join(names)
                    )
                )
            feedback.pushInfo(f"Photo paths from field '{field}'")
        elif field not in names:
            raise QgsProcessingException(f"The layer has no field '{field}'")
        # relative paths resolve from the layer file's folder, else the project's
        project = context.project()
        layer = self.parameterAsVectorLayer(parameters, self.INPUT, context)
        base_dir = layer_folder(layer) or (project.homePath() if project is not None else "") or None
        photos = []
        for feature in source.getFeatures():
            path = resolve_photo_path(feature[field], base_dir)
            if path is None:
                feedback.reportError(f"Feature {feature.id()}: empty photo path", False)
            else:
                photos.append(Path(path))
        return photos

    def _photos_from_folder(self, parameters, context) -> list[Path]:
        folder = self.parameterAsFile(parameters, self.FOLDER, context)
        if not os.path.isdir(folder):
            raise QgsProcessingException(f"The photo folder {folder!r} does not exist")
        return photos_in_folder(folder, self.parameterAsBoolean(parameters, self.RECURSIVE, context))

    # -- run ------------------------------------------------------------------------------------

    def processAlgorithm(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback):  # noqa: N802
        settings = self._settings(parameters, context)
        options = {**settings.options(), **analyst_parameters.options(self, parameters, context, feedback)}
        if parameters.get(self.INPUT) not in (None, ""):
            photos = self._photos_from_layer(parameters, context, feedback)
        else:
            photos = self._photos_from_folder(parameters, context)
        if not photos:
            raise QgsProcessingException(self.tr("No photos to geolocate."))
        total = len(photos)
        if options.get("joint") and total > P.MAX_JOINT_PHOTOS:
            raise QgsProcessingException(self.tr("A joint map combines at most {} photos; {} were given.").format(
                P.MAX_JOINT_PHOTOS, total))
        feedback.pushInfo(f"{total} photo(s) to geolocate")

        out_dir = Path(self.parameterAsString(parameters, self.OUTPUT_FOLDER, context))
        out_dir.mkdir(parents=True, exist_ok=True)
        fields = QgsFields()
        for name, kind in LAYER_FIELDS:
            fields.append(QgsField(name, FIELD_TYPES[kind]))
        parameters = {**parameters, self.OUTPUT: self._best_guess_destination(parameters.get(self.OUTPUT), out_dir)}
        sink, dest_id = self.parameterAsSink(
            parameters, self.OUTPUT, context, fields, QgsWkbTypes.Point, QgsCoordinateReferenceSystem("EPSG:4326")
        )
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))

        sinks = [sink]  # on_result writes through this list, emptied once the photos are done
        # the rasters load with the best guesses, into their project: when the dialog opens its outputs (the batch
        # dialog's "Load layers on completion", off by default) and "Add the rasters to the project" is on
        project = getattr(parameters[self.OUTPUT], "destinationProject", None)
        load = self.parameterAsBoolean(parameters, self.LOAD_RASTERS, context) and project is not None
        report = self.parameterAsBoolean(parameters, analyst_parameters.REPORT, context)
        stems = unique_stems(photos)
        rasters: list[str] = []
        vectors: list[str] = []
        finished = 0

        bar = JobProgress(P.job_units(total, bool(options.get("joint"))))

        def on_progress(progress: dict) -> None:
            feedback.setProgress(bar.update(progress))
            if progress.get("stage"):
                feedback.setProgressText(f"{progress['stage']} {progress.get('name') or ''}".strip())

        def on_result(result) -> None:
            nonlocal finished
            if result.status == P.STATUS_CANCELLED:
                return
            finished += 1
            feedback.setProgress(bar.finished(finished))
            row = summary_row(photos[result.index], result, result.save(out_dir, stems[result.index]))
            row.update(claim_fields(result.summary or {}))
            if not result.ok:
                feedback.reportError(f"{row['photo']}: {row['error'] or result.status}", False)
                return
            rasters.append(row["geotiff"])
            vectors.append(row["gpkg"])
            feature = QgsFeature(fields)
            feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(row["lon"], row["lat"])))
            feature.setAttributes([row[name] for name, _ in LAYER_FIELDS])
            sinks[0].addFeature(feature, QgsFeatureSink.FastInsert)
            if load:
                raster = (result.summary or {}).get("raster") or {}
                self._load_on_completion(context, project, row["geotiff"], stems[result.index],
                                         raster.get("max_probability"))
            feedback.pushInfo(describe_row(row))
            for check in (result.summary or {}).get("claims") or []:
                feedback.pushInfo(f"{row['photo']}, claim {claims_quote(check)}")
            if report:
                self._report(row["photo"], {k: row[k] for k in ("geotiff", "gpkg", "json")}, result.summary, feedback)

        joint = self._geolocate(settings, options, photos, feedback, on_progress, on_result)
        # The GeoPackage is committed when the sink is destroyed, which must happen before qgis_process exits:
        # dropping both references here does not wait for the collector, whatever still holds on_result.
        sinks.clear()
        del sink
        succeeded = len(rasters)
        failed = finished - succeeded
        if feedback.isCanceled():
            feedback.pushInfo(f"Cancelled: {succeeded} of {total} photo(s) geolocated")
        elif succeeded == 0:
            raise QgsProcessingException(f"None of the {total} photo(s) could be geolocated; see the errors above.")
        feedback.pushInfo(f"{succeeded} photo(s) geolocated, {failed} failed; results in {out_dir}")
        joint_files = self._save_joint(joint, out_dir, set(stems), feedback) if joint is not None else {}
        if joint is not None and joint.status != P.STATUS_CANCELLED:
            feedback.setProgress(bar.finished(bar.units))
        if report and joint_files:
            self._report("joint map", joint_files, joint.summary, feedback)
        return {
            self.JOINT_RASTER: joint_files.get("geotiff"),
            self.JOINT_GPKG: joint_files.get("gpkg"),
            self.OUTPUT: dest_id,
            self.OUTPUT_FOLDER: str(out_dir),
            self.RASTERS: rasters,
            self.VECTORS: vectors,
            self.SUCCEEDED: succeeded,
            self.FAILED: failed,
        }

    @staticmethod
    def _report(name: str, files: dict[str, str], summary: dict | None, feedback) -> None:
        """The result's HTML case report beside its files; a report that fails is reported, the result stays."""
        from ..report import ReportError, report_from_files

        try:
            path = report_from_files(name, files, summary or {})
        except (ReportError, OSError, ValueError) as exc:
            feedback.reportError(f"{name}: no case report ({exc})", False)
            return
        feedback.pushInfo(f"{name}: case report {path}")

    @staticmethod
    def _save_joint(joint, out_dir: Path, stems: set[str], feedback) -> dict[str, str]:
        """Write the joint map as joint.tif/.gpkg/.json (joint_2.* when a photo is named joint)."""
        from geoplonk_service.output_files import joint_stem

        files = {kind: str(path) for kind, path in joint.save(out_dir, joint_stem(stems)).items()}
        if not joint.ok:
            feedback.reportError(f"No joint map: {(joint.error or {}).get('message') or joint.status}", False)
            return {}
        summary = joint.summary or {}
        best = summary.get("best_guess") or {}
        where = ", ".join(p for p in (best.get("place"), best.get("country")) if p)
        feedback.pushInfo(f"Joint map of {len((summary.get('joint') or {}).get('photos') or [])} photos: best guess "
                          f"{best.get('lat', 0):.3f}, {best.get('lon', 0):.3f} ({where}); {files['geotiff']}")
        for check in summary.get("claims") or []:
            feedback.pushInfo(f"Joint map, claim {claims_quote(check)}")
        return files

    @staticmethod
    def _geolocate(settings: Settings, options: dict, photos: list[Path], feedback, on_progress, on_result):
        """Run the photos through a server: the plugin's manager in desktop QGIS, else one owned by this run.
        Returns the joint map's PhotoResult when the options ask for one, else None."""
        try:
            from geoplonk_service.client import ServerError, ServerUnavailable
            from geoplonk_service.launcher import ServerStartError
            from geoplonk_service.server_manager import LocalServerManager
        except ImportError:
            raise QgsProcessingException(messages.pyzmq_missing()[1]) from None

        plugin_servers = running_plugin_servers()
        with contextlib.nullcontext(plugin_servers) if plugin_servers else LocalServerManager() as servers:
            start_command = settings.start_command if settings.auto_start else None
            try:
                client = servers.connect(settings.endpoint, start_command, settings.timeout_s, log=feedback.pushInfo)
            except ServerUnavailable as exc:
                raise QgsProcessingException(messages.server_unreachable(settings.endpoint, settings.auto_start,
                                                                         str(exc))[1]) from None
            except ServerStartError as exc:
                raise QgsProcessingException(f"Could not start the local GeoPlonk server: {exc}") from None
            with client:
                try:
                    info = messages.describe_info(client.info(), "; ")
                    feedback.pushInfo(f"GeoPlonk server at {client.endpoint}: {info}")
                    if options.get("joint"):
                        return client.geolocate_joint(photos, options, on_progress, on_result, feedback.isCanceled)[1]
                    client.geolocate(photos, options, on_progress, on_result, feedback.isCanceled)
                    return None
                except ServerUnavailable as exc:
                    raise QgsProcessingException(
                        f"The GeoPlonk server at {client.endpoint} stopped answering: {exc}"
                    ) from None
                except ServerError as exc:
                    raise QgsProcessingException(
                        f"The GeoPlonk server refused the request ({exc.code}): {exc.message}"
                    ) from None
                except ValueError as exc:  # a joint map's photos that do not fit one request
                    raise QgsProcessingException(str(exc)) from None

    def _load_on_completion(
        self, context: QgsProcessingContext, project, path: str, name: str, max_probability: float | None
    ) -> None:
        details = QgsProcessingContext.LayerDetails(name, project, self.RASTERS)
        post = _StyleDensityRaster(max_probability)
        _postprocessors.append(post)
        details.setPostProcessor(post)
        context.addLayerToLoadOnCompletion(path, details)
