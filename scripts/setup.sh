#!/usr/bin/env bash
# Create .venv with the pinned dependencies (offline-capable: PyPI only) and the local Dagster home.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "imgdedup needs Python 3.11 (found $("$python_bin" --version)); set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
step() { echo "setup [$1/4] $2"; }
step 1 "virtual environment .venv ($("$python_bin" --version))"
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
step 2 "pinned packages (the first time: ~6 GB, several minutes; pip prints what it collects and installs)"
# The editable install makes `imgdedup` and the modules importable. Lines for packages already
# there are dropped, so a rerun prints only what changes.
# A venv from before the distribution was renamed holds the old editable `imgdedup`: one owner only.
.venv/bin/python -m pip uninstall --disable-pip-version-check -y -q imgdedup 2>/dev/null || true
.venv/bin/python -m pip install --disable-pip-version-check -e ".[dev]" 2>&1 \
    | grep --line-buffered -v -e "^Requirement already satisfied" -e "^WARNING: Location" || true
step 3 "checking that the packages import"
.venv/bin/python -c "import dagster, lancedb, great_expectations, torch, timm, transformers, faiss" \
    || { echo "setup: the virtual environment is incomplete (see pip output above)" >&2; exit 1; }

step 4 "Dagster home .dagster_home (instance storage, git-ignored)"
# Dagster reads dagster.yaml from $DAGSTER_HOME; keep instance storage project-local and git-ignored.
mkdir -p .dagster_home
ln -sfn ../dagster.yaml .dagster_home/dagster.yaml
echo "setup done: .venv is ready (.venv/bin/imgdedup --help)"
