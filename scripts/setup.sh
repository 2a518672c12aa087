#!/usr/bin/env bash
# Create .venv with the pinned dependencies (offline-capable: PyPI only) and the local Dagster home.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "imgdedup needs Python 3.11 (found $("$python_bin" --version)); set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
# Quiet pip, but keep its errors; the editable install makes `imgdedup` and the modules importable.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import dagster, lancedb, great_expectations, torch, timm, transformers, faiss" \
    || { echo "setup: the virtual environment is incomplete (see pip output above)" >&2; exit 1; }

# Dagster reads dagster.yaml from $DAGSTER_HOME; keep instance storage project-local and git-ignored.
mkdir -p .dagster_home
ln -sfn ../dagster.yaml .dagster_home/dagster.yaml
