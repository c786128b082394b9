#!/usr/bin/env bash
# The analyst guide's pictures (docs/img/analyst-*.png): a claim check, an area of interest and a joint map from
# `geoplonk locate` with the default model, each rendered by QGIS with the plugin's styling (scripts/render_map.py).
#   scripts/render_analyst_pictures.sh        (after `make demo` or `make test` has built both environments)
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_PY=.venv/server/bin/python
QGIS_PY=.venv/qgis/bin/python
WORLD=/usr/share/qgis/resources/data/world_map.gpkg
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Egypt's outline from QGIS's offline world map, as the area of interest; three crops of one photo as three
# photos of one place.
"$SERVER_PY" - "$WORLD" "$WORK" <<'PY'
import json
import sys
from pathlib import Path

import shapely
from PIL import Image
from pyogrio.raw import read

world, work = sys.argv[1], Path(sys.argv[2])
meta, _, geometry, fields = read(world, layer="countries", where="NAME = 'Egypt'")
outline = shapely.from_wkb(geometry[0]).simplify(0.05)
(work / "egypt.geojson").write_text(json.dumps(shapely.geometry.mapping(outline)))
photo = Image.open("samples/nile_delta.jpg")
(work / "place").mkdir()
w, h = photo.size
for i, (x, y) in enumerate([(0, 0), (w // 4, h // 4), (w // 2, h // 2)]):
    photo.crop((x, y, x + w // 2, y + h // 2)).save(work / "place" / f"nile_delta_part{i + 1}.jpg", quality=92)
PY

locate() {
  "$SERVER_PY" -m model_server.cli locate "$@" --start-server \
    --server-command "$SERVER_PY -m model_server.cli serve" > /dev/null
}
locate samples/nile_delta.jpg --out "$WORK/claim" --claim-exif --claim 15.6,32.5 --report
locate samples/sahara.jpg --out "$WORK/aoi" --aoi "$WORK/egypt.geojson"
locate "$WORK"/place/*.jpg --out "$WORK/joint-all" --joint
mkdir "$WORK/joint"
mv "$WORK"/joint-all/joint.* "$WORK/joint/"

mkdir -p docs/img
for name in claim aoi joint; do
  QT_QPA_PLATFORM=offscreen XDG_CONFIG_HOME=$WORK/qgis XDG_DATA_HOME=$WORK/qgis XDG_CACHE_HOME=$WORK/qgis \
    XDG_RUNTIME_DIR=$WORK/qgis QGIS_CUSTOM_CONFIG_PATH=$WORK/qgis \
    "$QGIS_PY" scripts/render_map.py "$WORK/$name" --out "docs/img/analyst-$name.png" --width 1200 --height 675 \
    2> >(grep -v '^Warning 1:' >&2)
done
echo "wrote docs/img/analyst-claim.png docs/img/analyst-aoi.png docs/img/analyst-joint.png"
