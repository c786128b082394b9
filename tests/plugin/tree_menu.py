"""Right-click a row of a layer tree view and click an entry of its context menu, as a person does.

Shared by the headless tests and desktop_script.py (which runs inside desktop QGIS): imports only Qt.
"""

from __future__ import annotations

from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QContextMenuEvent
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QApplication


def right_click_and_choose(view, index, text: str) -> list[str]:
    """Right-click the row at `index`, then click the menu entry `text` with the mouse; returns the menu's
    entries (the menu is closed unclicked when it has no such entry)."""
    seen: list[str] = []

    def choose():
        menu = QApplication.activePopupWidget()
        if menu is None:
            QTimer.singleShot(50, choose)
            return
        actions = [a for a in menu.actions() if not a.isSeparator()]
        seen.extend(a.text() for a in actions)
        wanted = next((a for a in actions if a.text() == text), None)
        if wanted is None:
            menu.close()
            return
        QTest.mouseClick(menu, Qt.LeftButton, Qt.NoModifier, menu.actionGeometry(wanted).center())

    pos = view.visualRect(index).center()
    QTimer.singleShot(50, choose)
    QApplication.sendEvent(view.viewport(), QContextMenuEvent(QContextMenuEvent.Mouse, pos,
                                                              view.viewport().mapToGlobal(pos)))
    QApplication.processEvents()
    return seen
