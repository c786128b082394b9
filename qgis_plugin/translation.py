"""Translations: `tr()` marks a user-visible string, `install_translator()` loads i18n/geoplonk_<locale>.qm.

The i18n/ folder ships empty of translations (only geoplonk_en.ts, the template); a translator adds
geoplonk_<locale>.ts, fills it in Qt Linguist and compiles it with lrelease (see i18n/README.md).
"""

from __future__ import annotations

import os

from qgis.PyQt.QtCore import QCoreApplication, QTranslator

CONTEXT = "GeoPlonk"
I18N_DIR = os.path.join(os.path.dirname(__file__), "i18n")
_translator: QTranslator | None = None


def tr(text: str) -> str:
    """The text in the user's QGIS language, when a translation is installed."""
    return QCoreApplication.translate(CONTEXT, text)


def install_translator() -> str | None:
    """Load the .qm file for QGIS's user locale (e.g. 'fr' from 'fr_FR'); returns its path or None."""
    global _translator
    from qgis.core import QgsSettings

    locale = str(QgsSettings().value("locale/userLocale", "") or "")[:2]
    path = os.path.join(I18N_DIR, f"geoplonk_{locale}.qm")
    if not locale or not os.path.isfile(path):
        return None
    translator = QTranslator()
    if translator.load(path):
        QCoreApplication.installTranslator(translator)
        _translator = translator  # keep it alive
        return path
    return None
