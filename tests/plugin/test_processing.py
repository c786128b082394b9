"""The Processing algorithm `geoplonk:geolocatephotos`: through processing.run (headless) and qgis_process.

A real server answers (the session fixture, or one the algorithm starts itself under
qgis_process); photos are small real images made by the conftest.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import pytest
from conftest import FAST_OPTIONS, server_command
from plugin_install import build_plugin_zip, make_profile, qgis_env, qgis_process_command

from geoplonk_service.protocol import DEFAULT_SOLVER, SOLVERS

ALG = "geoplonk:geolocatephotos"
FAST_PARAMS = {
    "SAMPLES": FAST_OPTIONS["samples"],
    "STEPS": FAST_OPTIONS["steps"],
    "RESOLUTION": FAST_OPTIONS["resolution"],
}


@pytest.fixture(scope="module")
def provider(qgis_processing):  # noqa: ARG001 - Processing must be initialised first
    from qgis.core import QgsApplication

    from qgis_plugin.processing.provider import GeoPlonkProvider

    prov = GeoPlonkProvider()  # a Python reference keeps it alive while registered
    assert QgsApplication.processingRegistry().addProvider(prov)
    yield prov
    QgsApplication.processingRegistry().removeProvider(prov)


@pytest.fixture
def mixed_folder(photo_dir, tmp_path):
    """The conftest's three photos plus a file that is not an image and a text file to ignore."""
    folder = tmp_path / "photos"
    shutil.copytree(photo_dir, folder)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg at all")
    (folder / "notes.txt").write_text("not a photo")
    return folder


class RecordingFeedback:
    """A QgsProcessingFeedback that keeps what the algorithm reported."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class _Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.errors: list[str] = []
                self.infos: list[str] = []
                self.progress_values: list[float] = []
                self.progressChanged.connect(self.progress_values.append)

            def reportError(self, error, fatalError=False):  # noqa: N802,N803 - QGIS's names
                self.errors.append(error)
                super().reportError(error, fatalError)

            def pushInfo(self, info):  # noqa: N802
                self.infos.append(info)
                super().pushInfo(info)

        return _Feedback()


def run(parameters: dict, feedback=None) -> dict:
    """processing.run, with the algorithm's reported errors in the failure message."""
    import processing
    from qgis.core import QgsProcessingException

    feedback = feedback if feedback is not None else RecordingFeedback()
    try:
        return processing.run(ALG, parameters, feedback=feedback)
    except QgsProcessingException as exc:
        raise AssertionError(f"{exc}; reported: {feedback.errors}") from exc


def run_raising(parameters: dict, feedback=None) -> dict:
    """Run the algorithm letting its QgsProcessingException through (processing.run only logs the message)."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback, QgsProject

    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    results, ok = alg.run(parameters, context, feedback or QgsProcessingFeedback(), {}, False)
    assert ok
    return results


def check_raster(path: str) -> float:
    """A valid EPSG:4326 probability raster: values >= 0 summing to 1 over the globe; returns its max."""
    import numpy as np
    from osgeo import gdal, osr

    ds = gdal.Open(path)
    assert ds is not None, f"{path} does not open"
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    srs.AutoIdentifyEPSG()
    assert srs.GetAuthorityCode(None) == "4326"
    band = ds.GetRasterBand(1)
    values = band.ReadAsArray().astype(np.float64)
    nodata = band.GetNoDataValue()
    valid = values[values != nodata] if nodata is not None else values.ravel()
    assert valid.size > 0 and np.all(valid >= 0)
    assert abs(valid.sum() - 1.0) < 0.01, f"probability mass {valid.sum()} != 1"
    return float(valid.max())


def best_guess_rows(path: str) -> list[dict]:
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(path, "best", "ogr")
    assert layer.isValid(), path
    assert layer.crs().authid() == "EPSG:4326"
    rows = []
    for feature in layer.getFeatures():
        row = {name: feature[name] for name in layer.fields().names()}
        point = feature.geometry().asPoint()
        row["_xy"] = (point.x(), point.y())
        rows.append(row)
    return rows


def test_folder_run_writes_rasters_and_merged_best_guesses(provider, plugin_settings, mixed_folder, tmp_path):  # noqa: ARG001

    out = tmp_path / "out"
    feedback = RecordingFeedback()
    result = run(
        {"FOLDER": str(mixed_folder), "OUTPUT_FOLDER": str(out), "OUTPUT": str(out / "best.gpkg"), **FAST_PARAMS},
        feedback,
    )

    good = sorted(["harbour", "desert_road", "forest"])  # stems made file-name safe, as PhotoResult.save does
    assert (result["SUCCEEDED"], result["FAILED"]) == (3, 1), feedback.errors
    # The bad photo fails alone, named in an error; the text file is not a photo at all.
    assert any("broken.jpg" in e for e in feedback.errors), feedback.errors
    assert not any("notes.txt" in e for e in feedback.errors)
    assert sorted(p.rsplit("/", 1)[-1][:-4] for p in result["RASTERS"]) == good
    for raster in result["RASTERS"]:
        assert check_raster(raster) > 0
        assert (out / (raster.rsplit("/", 1)[-1][:-4] + ".gpkg")).is_file()
    # the bar moves through each photo's stages (not only at results) and never goes back
    values = feedback.progress_values
    assert values == sorted(values) and values[-1] == pytest.approx(100.0), values
    assert len(set(values)) > 2 * 4, values  # a bar that moved only at the 4 results would take at most 5 values

    rows = best_guess_rows(result["OUTPUT"])
    assert sorted(r["photo"] for r in rows) == ["desert road.png", "forest.tif", "harbour.jpg"]
    for row in rows:
        assert -90 <= row["lat"] <= 90 and -180 <= row["lon"] <= 180
        assert row["_xy"] == pytest.approx((row["lon"], row["lat"]))
        assert math.isfinite(row["localizability"])
        assert 0 <= row["top_p_within_100km"] <= row["top_p_within_500km"] <= 1 and 0 < row["top_basin_share"] <= 1
        assert row["geotiff"] in result["RASTERS"]
        summary = json.loads((out / (row["geotiff"].rsplit("/", 1)[-1][:-4] + ".json")).read_text())
        assert row["lat"] == pytest.approx(summary["best_guess"]["lat"])
        assert row["country"] == summary["best_guess"]["country"]
        # no guidance given: the server drew the model's calibrated distribution and says which w that was
        assert isinstance(summary["options"]["cfg"], float)


def test_selected_features_of_a_photo_layer(provider, plugin_settings, photo_dir, tmp_path, qgis_new_project):  # noqa: ARG001
    from qgis.core import (
        QgsFeature,
        QgsGeometry,
        QgsPointXY,
        QgsProcessingFeatureSourceDefinition,
        QgsProject,
        QgsVectorLayer,
    )

    layer = QgsVectorLayer("Point?crs=EPSG:4326&field=name:string&field=Photo:string", "photos", "memory")
    features = []
    for i, name in enumerate(["harbour.jpg", "forest.tif", "desert road.png"]):
        feature = QgsFeature(layer.fields())
        feature.setAttributes([name, str(photo_dir / name)])
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(i, i)))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    layer.selectByExpression("\"name\" = 'forest.tif'")
    assert layer.selectedFeatureCount() == 1

    out = tmp_path / "out"
    result = run(
        {
            "INPUT": QgsProcessingFeatureSourceDefinition(layer.id(), selectedFeaturesOnly=True),
            "OUTPUT_FOLDER": str(out),
            "GUIDANCE": 0.5,
            **FAST_PARAMS,
            "SOLVER": SOLVERS.index("heun"),
        },
    )
    ran = json.loads((out / "forest.json").read_text())["options"]
    assert (ran["cfg"], ran["solver"], ran["steps"]) == (0.5, "heun", FAST_OPTIONS["steps"])
    # The photo field ("Photo") is detected; only the selected feature's photo is geolocated.
    assert result["SUCCEEDED"] == 1 and result["FAILED"] == 0
    assert result["RASTERS"] == [str(out / "forest.tif")]
    assert result["OUTPUT"] == str(out / "best_guesses.gpkg")
    assert [r["photo"] for r in best_guess_rows(result["OUTPUT"])] == ["forest.tif"]
    check_raster(result["RASTERS"][0])


def test_runs_as_a_step_of_a_processing_model(provider, plugin_settings, photo_dir, tmp_path):  # noqa: ARG001
    """In the graphical modeler: the folder comes from a model input, and the best guesses feed the next step
    (here a filter on localizability) as any vector output does."""
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFile,
        QgsVectorLayer,
    )

    model = QgsProcessingModelAlgorithm("geolocate then filter", "tests")
    model.addModelParameter(QgsProcessingParameterFile("photos", "Photos", QgsProcessingParameterFile.Folder),
                            QgsProcessingModelParameter("photos"))
    locate = QgsProcessingModelChildAlgorithm(ALG)
    locate.setChildId("locate")
    locate.addParameterSources("FOLDER", [QgsProcessingModelChildParameterSource.fromModelParameter("photos")])
    for name, value in {**FAST_PARAMS, "LOAD_RASTERS": False, "OUTPUT_FOLDER": str(tmp_path / "rasters")}.items():
        locate.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    model.addChildAlgorithm(locate)
    keep = QgsProcessingModelChildAlgorithm("native:extractbyexpression")
    keep.setChildId("keep")
    keep.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("locate", "OUTPUT")])
    keep.addParameterSources("EXPRESSION", [QgsProcessingModelChildParameterSource.fromStaticValue(
        '"localizability" IS NOT NULL')])
    output = QgsProcessingModelOutput("kept", "Kept guesses")
    output.setChildId("keep")
    output.setChildOutputName("OUTPUT")
    keep.setModelOutputs({"kept": output})
    model.addChildAlgorithm(keep)
    assert model.canExecute()[0]

    result = processing.run(model, {"photos": str(photo_dir), "keep:kept": str(tmp_path / "kept.gpkg")},
                            feedback=RecordingFeedback())
    kept = QgsVectorLayer(result["keep:kept"], "kept", "ogr")
    assert kept.isValid() and kept.featureCount() == 3
    assert sorted(f["photo"] for f in kept.getFeatures()) == ["desert road.png", "forest.tif", "harbour.jpg"]
    assert sorted(p.name for p in (tmp_path / "rasters").glob("*.tif")) == ["desert_road.tif", "forest.tif",
                                                                            "harbour.tif"]


def test_solver_parameter_defaults_to_the_saved_solver(qgis_processing):  # noqa: ARG001
    from qgis_plugin.processing.geolocate_algorithm import GeolocatePhotosAlgorithm
    from qgis_plugin.settings import Settings

    before = Settings.load()
    try:
        for solver, steps in (("midpoint", 12), ("euler", 32)):
            Settings(solver=solver, steps=steps).save()
            alg = GeolocatePhotosAlgorithm()
            alg.initAlgorithm()
            parameter = alg.parameterDefinition("SOLVER")
            assert SOLVERS[parameter.defaultValue()] == solver
            assert parameter.options()[SOLVERS.index("euler")].startswith("euler (the reference's sampler)")
            assert parameter.options()[SOLVERS.index(DEFAULT_SOLVER)].endswith(", default")
            assert alg.parameterDefinition("STEPS").defaultValue() == steps
    finally:
        before.save()


def test_fails_when_no_photo_succeeds(provider, plugin_settings, tmp_path):  # noqa: ARG001
    from qgis.core import QgsProcessingException

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"garbage")
    (folder / "b.png").write_bytes(b"")
    feedback = RecordingFeedback()
    with pytest.raises(QgsProcessingException, match=r"None of the 2 photo\(s\) could be geolocated"):
        run_raising({"FOLDER": str(folder), "OUTPUT_FOLDER": str(tmp_path / "out"), **FAST_PARAMS}, feedback)
    assert any("a.jpg" in e for e in feedback.errors) and any("b.png" in e for e in feedback.errors)


def test_needs_a_layer_or_a_folder(provider, plugin_settings, tmp_path):  # noqa: ARG001
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException):
        processing.run(ALG, {"OUTPUT_FOLDER": str(tmp_path / "out")})


def test_unreachable_server_without_auto_start_is_a_clear_error(provider, plugin_settings, photo_dir, tmp_path):  # noqa: ARG001
    from qgis.core import QgsProcessingException

    from geoplonk_service.launcher import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(QgsProcessingException, match=f"No GeoPlonk server answers at {endpoint}"):
        run_raising({"FOLDER": str(photo_dir), "OUTPUT_FOLDER": str(tmp_path / "out"), "ENDPOINT": endpoint})


def auto_start_settings(plugin_settings, command: str):
    """Saved settings whose endpoint answers nothing, so a run must start a local server with `command`."""
    from dataclasses import replace

    from geoplonk_service.launcher import free_port

    replace(plugin_settings, endpoint=f"tcp://127.0.0.1:{free_port()}", auto_start=True, start_command=command).save()


def started_endpoint(feedback) -> str:
    (line,) = [i for i in feedback.infos if i.startswith("Local GeoPlonk server ready at ")]
    return line.rsplit(" ", 1)[-1]


def test_a_run_without_the_plugin_stops_the_server_it_started(provider, plugin_settings, photo_dir, tmp_path,
                                                              geoplonk_server_command):
    from geoplonk_service.client import GeoPlonkClient, ServerUnavailable

    auto_start_settings(plugin_settings, geoplonk_server_command)
    feedback = RecordingFeedback()
    result = run({"FOLDER": str(photo_dir), "OUTPUT_FOLDER": str(tmp_path / "out"), **FAST_PARAMS}, feedback)
    assert result["SUCCEEDED"] == 3
    with GeoPlonkClient(started_endpoint(feedback), timeout_s=0.5, retries=0) as client, \
            pytest.raises(ServerUnavailable):
        client.info()


def test_with_the_plugin_loaded_a_run_shares_its_local_server(provider, plugin, plugin_settings, photo_dir, tmp_path,
                                                              geoplonk_server_command, monkeypatch):
    import qgis.utils

    from qgis_plugin.settings import Settings

    monkeypatch.setitem(qgis.utils.plugins, "qgis_plugin", plugin)
    auto_start_settings(plugin_settings, geoplonk_server_command)
    feedback = RecordingFeedback()
    result = run({"FOLDER": str(photo_dir), "OUTPUT_FOLDER": str(tmp_path / "out"), **FAST_PARAMS}, feedback)
    assert result["SUCCEEDED"] == 3
    server = plugin.servers.local_server
    assert server is not None and server.running and server.endpoint == started_endpoint(feedback)
    with plugin.connect(Settings.load()) as client:  # the toolbar gets the same server, already running
        assert client.endpoint == server.endpoint


def test_photo_field_guess():
    from qgis_plugin.sources import guess_photo_field

    assert guess_photo_field(["id", "Photo"]) == "Photo"
    assert guess_photo_field(["id", "pic"], {"id": [1, 2], "pic": ["a.JPG", "b.heic"]}) == "pic"
    assert guess_photo_field(["id", "note"], {"note": ["hello"]}) is None


def test_qgis_process_runs_the_installed_plugin(photo_dir, tmp_path):
    """`qgis_process run geoplonk:geolocatephotos` with the plugin installed from the zip in a fresh
    profile; no server runs at the configured endpoint, so the algorithm starts one itself."""
    from geoplonk_service.launcher import free_port

    plugin_zip = build_plugin_zip(tmp_path / "geoplonk.zip")
    profiles = tmp_path / "qgis-profiles"
    configured = f"tcp://127.0.0.1:{free_port()}"
    make_profile(
        profiles,
        plugin_zip,
        {
            "endpoint": configured,
            "auto_start": "true",
            "start_command": server_command(),
        },
    )
    env = qgis_env(tmp_path / "home")
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(profiles)
    env["QT_QPA_PLATFORM"] = "offscreen"
    qgis_process = qgis_process_command()

    listing = subprocess.run([*qgis_process, "list"], env=env, capture_output=True, text=True, timeout=120)
    assert "geoplonk:geolocatephotos" in listing.stdout, listing.stderr[-2000:]

    out = tmp_path / "out"
    run = subprocess.run(
        [
            *qgis_process,
            "--json",
            "run",
            ALG,
            "--",
            f"FOLDER={photo_dir}",
            f"OUTPUT_FOLDER={out}",
            *(f"{k}={v}" for k, v in FAST_PARAMS.items()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout)
    results = report["results"]
    assert results["SUCCEEDED"] == 3 and results["FAILED"] == 0
    assert sorted(results["RASTERS"]) == sorted(str(out / f"{s}.tif") for s in ("harbour", "desert_road", "forest"))
    for raster in results["RASTERS"]:
        check_raster(raster)
    assert results["OUTPUT"] == str(out / "best_guesses.gpkg")
    assert len(best_guess_rows(results["OUTPUT"])) == 3
    # Nothing answered at the configured endpoint: the run used a server started with the configured command.
    used = [line for line in report["log"]["info"] if line.startswith("GeoPlonk server at tcp://127.0.0.1:")]
    assert used and configured not in used[0], report["log"]


def readme_qgis_process_lines() -> list[str]:
    """The shell lines of the README's qgis_process block (the one after its marker comment)."""
    from plugin_install import ROOT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- qgis_process lines:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_qgis_process_lines_work_on_debian_12(photo_dir, tmp_path):
    """The README's two lines, run as written by bash: enable the plugin installed from the zip (not enabled
    yet), then run the algorithm with the start command from $GEOPLONK_SERVER_COMMAND and no GeoPlonk settings
    in QGIS3.ini.  `$HOME/geoplonk` is this repository; `samples` holds the test photos."""
    import zipfile

    from plugin_install import ROOT

    lines = readme_qgis_process_lines()
    assert len(lines) == 3 and lines[1] == "qgis_process.bin plugins enable geoplonk"
    assert "qgis_process.bin run geoplonk:geolocatephotos" in lines[2] and "GEOPLONK_SERVER_COMMAND=" in lines[2]
    home = tmp_path / "home"
    env = qgis_env(home)
    env.pop("QT_QPA_PLATFORM", None)
    env.pop("GEOPLONK_SERVER_COMMAND", None)  # only the README line's own
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)
    (home / "geoplonk").symlink_to(ROOT)
    profile = home / "xdg_data_home" / "QGIS" / "QGIS3" / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(build_plugin_zip(tmp_path / "geoplonk.zip")) as zf:  # what "Install from ZIP" unpacks
        zf.extractall(plugins)
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[qgis]\ncheckVersion=false\nallowVersionCheck=false\n", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    (work / "samples").symlink_to(photo_dir)

    enable = subprocess.run(["bash", "-e", "-c", "\n".join(lines[:2])], cwd=work, env=env, capture_output=True,
                            text=True, timeout=120)
    assert enable.returncode == 0, enable.stdout[-2000:] + enable.stderr[-2000:]
    assert "geoplonk=true" in ini.read_text().replace(" ", "")
    run = subprocess.run(["bash", "-e", "-c", "\n".join([lines[0], lines[2]])], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = work / "geoplonk-results"
    assert sorted(p.name for p in out.glob("*.tif")) == ["desert_road.tif", "forest.tif", "harbour.tif"], run.stdout
    assert "[geoplonk]" not in ini.read_text()  # nothing was configured in the ini


def test_debian_qgis_process_wrapper_is_what_the_readme_avoids():
    """Debian's /usr/bin/qgis_process passes $QGIS_OPTS (--noversioncheck), which 3.22's program refuses: the
    reason the README calls qgis_process.bin."""
    import os

    # scripts/install-system.sh installs Debian's qgis package, which ships this wrapper and its options file.
    assert "noversioncheck" in open("/etc/default/qgis").read()
    wrapped = subprocess.run(["qgis_process", "--version"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    direct = subprocess.run(["qgis_process.bin", "--version"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert direct.returncode == 0 and "QGIS" in direct.stdout
    assert wrapped.returncode != 0 or "noversioncheck" in wrapped.stdout + wrapped.stderr
