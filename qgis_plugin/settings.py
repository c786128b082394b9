"""The plugin's settings: one dataclass, stored with QgsSettings under "geoplonk/".

`Settings` is the contract between the forms and the work: the settings dialog edits it, the toolbar
task runs with it, and the Processing algorithm loads it and overrides it with its parameters.  Its
defaults are the protocol's.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from geoplonk_service import protocol as P

PREFIX = "geoplonk/"
DEFAULT_START_COMMAND = "geoplonk serve"
# The start command when the settings hold none: lets qgis_process and scripts run without editing QGIS3.ini.
START_COMMAND_ENV = "GEOPLONK_SERVER_COMMAND"
# The solver a stored `steps` belongs to when the settings hold no `solver` (see Settings.load).
STEPS_ONLY_SOLVER = "euler"
# How the forms name the solvers; the cost of a run is steps x the network evaluations of one step.
SOLVER_LABELS = {
    "euler": "euler (the reference's sampler)",
    "rk3": "rk3 (third order: fewest evaluations for its accuracy)",
}
SOLVER_HELP = "Network evaluations per step: euler 1, heun and midpoint 2, rk3 3, rk4 4 (a run costs steps x that)"


@dataclass
class Settings:
    """What the user can configure; `options()` maps it onto the protocol's geolocate options."""

    endpoint: str = P.DEFAULT_ENDPOINT
    start_command: str = DEFAULT_START_COMMAND
    auto_start: bool = True
    model: str = ""  # empty: the server's default model
    samples: int = P.SAMPLES.default
    solver: str = P.DEFAULT_SOLVER  # sent with `steps`: the two go together
    steps: int = P.STEPS.default
    cfg: float | None = P.CFG.default  # None: the model's calibrated guidance
    resolution: float = P.RESOLUTION.default
    levels: list[float] = field(default_factory=lambda: list(P.DEFAULT_OPTIONS["levels"]))
    output_folder: str = ""  # empty: the project's folder when saved, else ~/GeoPlonk/results
    timeout_s: float = 30.0

    def options(self) -> dict[str, Any]:
        """The geolocate options sent to the server: the fields named like a protocol option, unless unset."""
        values = {name: getattr(self, name) for name in P.DEFAULT_OPTIONS if hasattr(self, name)}
        return {name: value for name, value in values.items() if value is not None and value != ""}

    @classmethod
    def load(cls, qsettings=None) -> Settings:
        """Read from QgsSettings (or any QSettings-like object), falling back to defaults per key.

        A solver and its steps go together: stored `steps` without a stored `solver` are steps for "euler"
        (STEPS_ONLY_SOLVER, the reference's sampler, one network evaluation per step) and load with it, so they
        cost what the user chose; the default solver would make them three times the work.  With neither
        stored, the protocol's defaults apply.
        """
        qs = qsettings if qsettings is not None else _qgs_settings()
        defaults = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            default = getattr(defaults, f.name)
            raw = qs.value(PREFIX + f.name, None)
            if raw is None and f.name == "start_command" and os.environ.get(START_COMMAND_ENV, "").strip():
                raw = os.environ[START_COMMAND_ENV].strip()
            values[f.name] = default if raw is None else _coerce(raw, default)
        if qs.value(PREFIX + "solver", None) is None and qs.value(PREFIX + "steps", None) is not None:
            values["solver"] = STEPS_ONLY_SOLVER
        return cls(**values)

    def save(self, qsettings=None) -> None:
        qs = qsettings if qsettings is not None else _qgs_settings()
        for name, value in asdict(self).items():
            if isinstance(value, list):
                value = ",".join(f"{v:g}" for v in value)
            elif value is None:
                value = ""  # QSettings cannot hold None on every platform
            qs.setValue(PREFIX + name, value)


def solver_label(name: str) -> str:
    """A solver's name as the settings dialog and Processing show it, the protocol's default marked."""
    label = SOLVER_LABELS.get(name, name)
    return f"{label}, default" if name == P.DEFAULT_SOLVER else label


def parse_levels(text: str) -> list[float]:
    """'50, 90, 99' or '0.5,0.9,0.99' -> [0.5, 0.9, 0.99]; raises ValueError on anything else."""
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip().rstrip("%").strip()
        if not part:
            continue
        value = float(part)
        value = value / 100.0 if value >= 1 else value
        if not 0 < value < 1:
            raise ValueError(f"credible level {part!r} is not between 0 and 100 %")
        out.append(value)
    if not out:
        raise ValueError("give at least one credible level, e.g. 50, 90, 99")
    return sorted(set(out))


def optional_float(raw: Any) -> float | None:
    """A stored number, or None for an empty or unreadable value."""
    try:
        return None if raw is None or str(raw).strip() == "" else float(raw)
    except (TypeError, ValueError):
        return None


def _coerce(raw: Any, default: Any) -> Any:
    """QSettings hands back strings on some platforms: convert to the default's type."""
    if default is None:  # an optional number (cfg): empty means unset
        return optional_float(raw)
    try:
        if isinstance(default, bool):
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(float(raw))
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list):
            return parse_levels(",".join(map(str, raw)) if isinstance(raw, (list, tuple)) else raw)
        return str(raw)
    except (TypeError, ValueError):
        return default


def _qgs_settings():
    from qgis.core import QgsSettings

    return QgsSettings()
