#!/usr/bin/env bash
# Set up the environment, lint, and run the whole test suite (slow integration tests included).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k loader`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/env.sh | tail -n 1)
"$PY" -m ruff check ardrag flows annotation tests benchmarks
"$PY" -m pytest "$@"
