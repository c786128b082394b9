"""'Open case report' in the Layers panel's context menu of a GeoPlonk result group.

QGIS 3.22 offers plugins no hook into a group's context menu (custom actions are per layer type), and
replacing the view's menu provider would delete QGIS's own.  So the right-click on a result group is
answered here: QGIS's own menu, made by its provider, with the report action added below it.  Any other
right-click goes to QGIS untouched.
"""

from __future__ import annotations

from qgis.PyQt.QtCore import QEvent, QObject

from . import layers


class ReportMenu(QObject):
    """An event filter on a QgsLayerTreeView's viewport."""

    def __init__(self, view, action):
        super().__init__(view)
        self.view = view
        self.action = action
        self.last_menu_actions: list[str] = []  # what the latest menu offered (the analyst's, and for tests)
        view.viewport().installEventFilter(self)

    def remove(self) -> None:
        try:
            self.view.viewport().removeEventFilter(self)
        except RuntimeError:  # the view is gone with QGIS
            pass

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.ContextMenu:
            return False
        view = self.view
        index = view.indexAt(event.pos())
        group = layers.find_result_group(view.index2node(index)) if index.isValid() else None
        if group is None:
            return False
        if not view.selectionModel().isSelected(index):  # as QGIS does: the clicked row becomes current
            view.setCurrentIndex(index)
        provider = view.menuProvider()
        menu = provider.createContextMenu() if provider is not None else None
        if menu is None:
            from qgis.PyQt.QtWidgets import QMenu

            menu = QMenu(view)
        if menu.actions():
            menu.addSeparator()
        menu.addAction(self.action)
        self.last_menu_actions = [a.text() for a in menu.actions() if not a.isSeparator()]
        menu.exec_(view.viewport().mapToGlobal(event.pos()))
        menu.deleteLater()
        return True
