#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment: torch first, pinned (the CPU build here; an
# unpinned torch pulls gigabytes of CUDA packages), then ardrag with every extra and the dev tools,
# under constraints.txt. Reinstalls only when pyproject.toml or constraints.txt change.
# Usage: source-free, prints the venv's python path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${ARDRAG_VENV:-.venv}
TORCH_SPEC=${ARDRAG_TORCH:-torch==2.13.0}

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"ardrag needs Python >= 3.11; {sys.executable} is {sys.version.split()[0]} (set PYTHON=...)")
PY

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.ardrag-install-stamp"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing $TORCH_SPEC, then ardrag[all,dev] into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC" >&2
  "$VENV/bin/python" -m pip install --quiet -e ".[all,dev]" -c constraints.txt >&2
  echo "$want" > "$stamp"
fi
echo "$VENV/bin/python"
