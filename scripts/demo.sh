#!/usr/bin/env bash
# GeoPlonk demo (`make demo`, after the two environments exist): geolocate the sample photos with a
# local server, render the result map with QGIS, print where everything is.  The server is started
# by `geoplonk locate --start-server` and stopped when it finishes (also if this script is killed:
# the server watches its parent process).
#
# Environment: GEOPLONK_MODEL (a model name or folder, default: the server's default model),
# DEMO_OUT (default demo-output), DEMO_SAMPLES / DEMO_STEPS (sampling effort; default: the server's own, what the
# plugin uses).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${DEMO_OUT:-demo-output}
SERVER_PY=$ROOT/.venv/server/bin/python
QGIS_PY=$ROOT/.venv/qgis/bin/python
SAMPLES_DIR=$ROOT/samples

for py in "$SERVER_PY" "$QGIS_PY"; do
  [[ -x $py ]] || { echo "demo: $py is missing; run 'make demo' (it builds the environments first)" >&2; exit 2; }
done
mkdir -p "$OUT"
rm -f "$OUT"/*.tif "$OUT"/*.gpkg "$OUT"/*.json "$OUT"/summary.csv "$OUT"/map.png "$OUT"/map-*.png

shopt -s nullglob nocaseglob
photos=("$SAMPLES_DIR"/*.{jpg,jpeg,png,tif,tiff,webp,heic})
shopt -u nocaseglob
if (( ${#photos[@]} == 0 )); then
  echo "demo: no sample photos in $SAMPLES_DIR (they ship with the repository; is this a full clone?)" >&2
  exit 2
fi
echo "demo: ${#photos[@]} photo(s): ${photos[*]##*/}"

locate_args=()
[[ -n ${GEOPLONK_MODEL:-} ]] && locate_args+=(--model "$GEOPLONK_MODEL")
[[ -n ${DEMO_SAMPLES:-} ]] && locate_args+=(--samples "$DEMO_SAMPLES")
[[ -n ${DEMO_STEPS:-} ]] && locate_args+=(--steps "$DEMO_STEPS")
t0=$(date +%s)
"$SERVER_PY" -m model_server.cli locate "${photos[@]}" --out "$OUT" --start-server \
  --server-command "$SERVER_PY -m model_server.cli serve" "${locate_args[@]}"
t1=$(date +%s)

# QGIS writes into $HOME: keep its profile out of the user's.
QGIS_HOME=$(mktemp -d)
trap 'rm -rf "$QGIS_HOME"' EXIT
QT_QPA_PLATFORM=offscreen XDG_CONFIG_HOME=$QGIS_HOME XDG_DATA_HOME=$QGIS_HOME XDG_CACHE_HOME=$QGIS_HOME \
  XDG_RUNTIME_DIR=$QGIS_HOME QGIS_CUSTOM_CONFIG_PATH=$QGIS_HOME \
  "$QGIS_PY" scripts/render_map.py "$OUT" --out "$OUT/map.png" --project "$OUT/demo.qgz" 2> >(grep -v '^Warning 1:' >&2)
t2=$(date +%s)

echo
echo "=== GeoPlonk demo summary ==="
"$QGIS_PY" - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
doc = json.loads((out / "summary.json").read_text())
server = doc.get("server") or {}
print(f"server: {server.get('version')} model {server.get('default_model')} on {server.get('device')}")
for row in doc["photos"]:
    if row["status"] != "ok":
        print(f"  {Path(row['photo']).name}: {row['status']} {row['error']}")
        continue
    where = ", ".join(p for p in (row["place"], row["country"]) if p)
    print(f"  {Path(row['photo']).name}: best guess {row['lat']:.2f}, {row['lon']:.2f} ({where}); "
          f"localizability {row['localizability']:.2f}; 90 % region {row['area_90_km2']:,.0f} km2")
    print(f"      {row['geotiff']}\n      {row['gpkg']}")
PY
echo "summary table: $OUT/summary.csv"
echo "map picture:   $OUT/map.png"
echo "QGIS project:  $OUT/demo.qgz (open it in QGIS: the same styled layers)"
echo "time: geolocation $((t1 - t0)) s, map $((t2 - t1)) s"
