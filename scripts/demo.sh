#!/usr/bin/env bash
# The main job on embedded defaults: write a procedural dataset with exactly known motion, then
# inspect it. (Issue 9 turns this into the whole curation -> training -> evaluation demo.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/env.sh | tail -n 1)
ARDRAG="$(dirname "$PY")/ardrag"
OUT=${1:-runs/demo}
"$ARDRAG" procedural --num 40 --out "$OUT/procedural"
"$ARDRAG" shards inspect "$OUT/procedural"
