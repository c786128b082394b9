"""Dataset builders (Earth tiles from Blue Marble)."""
