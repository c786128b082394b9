"""GeoPlonk engine and model server (the torch side)."""

__version__ = "0.1.0"
