"""A map tool: the analyst clicks the claimed location on the canvas."""

from __future__ import annotations

from qgis.core import QgsCoordinateReferenceSystem, QgsPointXY
from qgis.gui import QgsMapToolEmitPoint
from qgis.PyQt.QtCore import Qt, pyqtSignal


class ClaimMapTool(QgsMapToolEmitPoint):
    """Emits `claimed(point, crs)` for a left click (the point in the canvas's CRS), then hands the canvas back
    to the tool that was active before."""

    claimed = pyqtSignal(QgsPointXY, QgsCoordinateReferenceSystem)

    def __init__(self, canvas):
        super().__init__(canvas)
        self.previous = None
        self.setCursor(Qt.CrossCursor)
        self.canvasClicked.connect(self._clicked)

    def start(self) -> None:
        canvas = self.canvas()
        current = canvas.mapTool()
        self.previous = current if current is not self else self.previous
        canvas.setMapTool(self)

    def _clicked(self, point: QgsPointXY, button) -> None:
        if button != Qt.LeftButton:
            return
        canvas = self.canvas()
        self.claimed.emit(QgsPointXY(point), canvas.mapSettings().destinationCrs())
        if self.previous is not None:
            canvas.setMapTool(self.previous)
        else:
            canvas.unsetMapTool(self)
