"""The benchmark suite of `make bench` (benchmarks/bench_all.py): what it measures, at which sizes.

  common.py    paths, sizes, timing and distance helpers
  engine.py    parts 1-4 in this process: roofline, sampling, accuracy against cost, exact log-density
  server.py    parts 5-7 through a real `geoplonk serve`: one photo, a batch, how the time grows
  record.py    the record (schema 1 of benchmarks/render_doc.py): figures by part, the issue's targets
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The repository (model_server, geoplonk_service), benchmarks/ (render_doc) and tests/engine (plonk_reference,
# the authors' code as the tests load it).
for _path in (REPO / "tests" / "engine", REPO / "benchmarks", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
