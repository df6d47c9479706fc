#!/usr/bin/env bash
# The main job on embedded defaults: `ardrag demo`, the whole system on this machine (procedural data
# with the toy model's look, the opencv tracker, stages that start from the shipped toy model):
# curation -> annotation queue -> shards -> teacher -> distillation -> GRPO -> evaluation, ending with
# runs/demo/report.md.
# Usage: bash scripts/demo.sh [--out DIR] [--auto-annotate] (any `ardrag demo` option)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/env.sh | tail -n 1)
exec "$(dirname "$PY")/ardrag" demo "$@"
