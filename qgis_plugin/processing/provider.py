"""The "GeoPlonk" Processing provider (id `geoplonk`)."""

from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .geolocate_algorithm import GeolocatePhotosAlgorithm


class GeoPlonkProvider(QgsProcessingProvider):
    """Holds the plugin's algorithms; registered by the plugin's initProcessing()."""

    def loadAlgorithms(self) -> None:  # noqa: N802 - Qt/QGIS naming
        self.addAlgorithm(GeolocatePhotosAlgorithm())

    def id(self) -> str:
        return "geoplonk"

    def name(self) -> str:
        return "GeoPlonk"

    def longName(self) -> str:  # noqa: N802
        return "GeoPlonk photo geolocation"

    def icon(self) -> QIcon:
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "icon.svg")
        return QIcon(path) if os.path.exists(path) else QgsProcessingProvider.icon(self)
