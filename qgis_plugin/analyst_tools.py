"""The analyst's toolbar tools: set the claim (click, selected points, EXIF), set the area of interest (selected
polygons), and geolocate several photos as one place.

What they set lives in an Analysis that every toolbar geolocation sends until "Clear" (see analysis.py).
Each tool reports what it set, or what is wrong with the input, in the message bar.
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QAction, QInputDialog, QMenu, QToolButton

from geoplonk_service import protocol as P

from . import messages
from .analysis import Analysis
from .aoi import AoiError, aoi_from_layer
from .claims import ClaimError, claim_at, claims_from_layer
from .translation import tr


class AnalystTools:
    """The actions and the claim map tool of one plugin instance.

    `choose_weight` is an attribute (like the plugin's dialog hooks) so scripts can answer it: it returns the
    prior's weight outside the area, or None when the analyst cancels.
    """

    def __init__(self, plugin):
        self.plugin = plugin
        self.analysis = Analysis()
        self.claim_tool = None
        self._click_hint = None  # the bar's 'click the claimed location' item
        self.menu_button: QToolButton | None = None
        self.choose_weight: Callable[[float], float | None] = self._dialog_weight

    def create_actions(self, parent) -> list[QAction]:
        def action(name: str, text: str, slot, tip: str = "", checkable: bool = False) -> QAction:
            act = QAction(text, parent)
            act.setObjectName(name)
            act.setToolTip(tip or text)
            act.setCheckable(checkable)
            (act.toggled if checkable else act.triggered).connect(slot)
            return act

        self.action_claim_click = action(
            "geoplonkClaimClick", tr("Claim: click the claimed location on the map"), self.start_claim_click,
            tr("Click a point on the map: every geolocation then says how plausible the photo's map finds it"))
        self.action_claim_layer = action(
            "geoplonkClaimLayer", tr("Claim: the selected points of the active layer"), self.claims_from_selection)
        self.action_claim_exif = action(
            "geoplonkClaimExif", tr("Claim: each photo's EXIF GPS position"), self.set_claim_exif, checkable=True)
        self.action_aoi = action(
            "geoplonkAoi", tr("Area of interest: the selected polygons of the active layer"), self.aoi_from_selection,
            tr("Restrict the maps to the selected polygons (a country, a coastline strip)"))
        self.action_aoi_weight = action(
            "geoplonkAoiWeight", tr("Area of interest: weight outside it…"), self.ask_aoi_weight)
        self.action_clear = action("geoplonkClearCase", tr("Clear the claims and the area of interest"), self.clear)
        self.action_joint = action(
            "geoplonkJoint", tr("Geolocate as one place"), self.plugin.geolocate_selected_as_one_place,
            tr("Geolocate the selected photos, known to come from one place, and make one joint map"))
        return [self.action_claim_click, self.action_claim_layer, self.action_claim_exif, self.action_aoi,
                self.action_aoi_weight, self.action_clear, self.action_joint]

    def add_to_toolbar(self, toolbar) -> None:
        """'Geolocate as one place', and a drop-down button holding the claim and area tools."""
        toolbar.addAction(self.action_joint)
        menu = QMenu(toolbar)
        for act in (self.action_claim_click, self.action_claim_layer, self.action_claim_exif, None, self.action_aoi,
                    self.action_aoi_weight, None, self.action_clear):
            menu.addSeparator() if act is None else menu.addAction(act)
        button = QToolButton(toolbar)
        button.setObjectName("geoplonkCaseButton")
        button.setText(tr("Claims and area"))
        button.setToolTip(tr("Check claimed locations and restrict the maps to an area of interest"))
        button.setPopupMode(QToolButton.InstantPopup)
        button.setMenu(menu)
        toolbar.addWidget(button)
        self.menu_button = button

    def unload(self) -> None:
        if self.claim_tool is not None:
            canvas = self.claim_tool.canvas()
            if canvas is not None and canvas.mapTool() is self.claim_tool:
                canvas.unsetMapTool(self.claim_tool)
            self.claim_tool = None

    # -- claims -------------------------------------------------------------------------

    def start_claim_click(self) -> None:
        """The next left click on the canvas sets the claim."""
        from .claim_tool import ClaimMapTool

        if self.claim_tool is None:
            self.claim_tool = ClaimMapTool(self.plugin.iface.mapCanvas())
            self.claim_tool.claimed.connect(self.set_clicked_claim)
            self.claim_tool.deactivated.connect(self._end_click_hint)  # another tool chosen: no click to wait for
        self.claim_tool.start()
        self._end_click_hint()
        self._click_hint = self.plugin.show_hint(tr("Click the claimed location on the map."))

    def _end_click_hint(self) -> None:
        self.plugin.end_hint(self._click_hint)
        self._click_hint = None

    def set_clicked_claim(self, point, crs) -> None:
        self._end_click_hint()  # the click came: the message saying what it set replaces the hint
        try:
            claim = claim_at(point, crs, "click", "")
        except ClaimError as exc:
            self._refuse(str(exc))
            return
        claim["label"] = f"clicked point {claim['lat']:.4f}, {claim['lon']:.4f}"
        self.analysis.claims = [claim]
        self._set(tr("Claim set at the clicked point"))

    def claims_from_selection(self) -> None:
        layer = self.plugin.iface.activeLayer()
        try:
            claims = claims_from_layer(layer, selected_only=True)
        except ClaimError as exc:
            self._refuse(str(exc))
            return
        self.analysis.claims = claims
        self._set(tr("Claims set from the selected points of '{}'").format(layer.name()))

    def set_claim_exif(self, checked: bool) -> None:
        self.analysis.claim_exif = bool(checked)
        self._set(tr("Each photo's EXIF GPS is checked as a claim") if checked
                  else tr("EXIF GPS no longer checked as a claim"))

    # -- area of interest -----------------------------------------------------------------

    def aoi_from_selection(self) -> None:
        layer = self.plugin.iface.activeLayer()
        try:
            aoi = aoi_from_layer(layer, selected_only=True)
        except AoiError as exc:
            self._refuse(str(exc))
            return
        self.analysis.aoi = aoi.geometry
        self.analysis.aoi_name = aoi.describe(layer.name())
        self._set(tr("Area of interest set from the selected polygons of '{}'").format(layer.name()))

    def ask_aoi_weight(self) -> None:
        weight = self.choose_weight(self.analysis.aoi_weight)
        if weight is None:
            return
        if not P.AOI_WEIGHT.accepts(weight):
            self._refuse(messages.weight_out_of_range(weight, P.AOI_WEIGHT.describe()))
            return
        self.analysis.aoi_weight = float(weight)
        self._set(tr("Weight outside the area of interest set to {:g}").format(weight))

    def _dialog_weight(self, current: float) -> float | None:
        value, ok = QInputDialog.getDouble(
            self.plugin.iface.mainWindow(), "GeoPlonk",
            tr("Weight of the map outside the area of interest (0: restricted to the area, 1: no effect)"),
            current, P.AOI_WEIGHT.minimum, P.AOI_WEIGHT.maximum, 2)
        return value if ok else None

    def clear(self) -> None:
        exif = self.analysis.claim_exif
        self.analysis = Analysis()
        if exif:
            self.action_claim_exif.setChecked(False)
        self._set(tr("Claims and area of interest cleared"))

    # -- messages ---------------------------------------------------------------------------

    def _set(self, what: str) -> None:
        self._show(*messages.case_set(what, self.analysis.describe()), Qgis.Info)

    def _refuse(self, problem: str) -> None:
        self._show(*messages.input_refused(problem), Qgis.Warning)

    def _show(self, title: str, text: str, details: str, level) -> None:
        self.plugin.show_message(title, text, details, level)
