"""What of the plugin is in QGIS: its actions by name, its toolbars and its Processing provider.

Shared by the headless tests and desktop_script.py (which runs inside desktop QGIS and imports it from this folder).
"""

from __future__ import annotations


def plugin_census(main_window) -> dict:
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QCoreApplication, QEvent
    from qgis.PyQt.QtWidgets import QAction, QToolBar

    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)  # what deleteLater() let go
    return {
        "actions": sorted(a.objectName() for a in main_window.findChildren(QAction)
                          if a.objectName().startswith("geoplonk")),
        "toolbars": len([t for t in main_window.findChildren(QToolBar) if t.objectName() == "GeoPlonkToolbar"]),
        "providers": [p.id() for p in QgsApplication.processingRegistry().providers() if p.id() == "geoplonk"],
    }
