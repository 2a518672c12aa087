#!/usr/bin/env bash
# Open the Dagster UI on 127.0.0.1:3000 with this project's instance and the demo's settings.
set -euo pipefail
cd "$(dirname "$0")/.."
export DAGSTER_HOME="$PWD/.dagster_home" GX_ANALYTICS_ENABLED=false DAGSTER_DISABLE_TELEMETRY=1
export IMGDEDUP_EMBEDDER="${IMGDEDUP_EMBEDDER:-offline}"
exec .venv/bin/dagster dev -w workspace.yaml -h "${DAGSTER_HOST:-127.0.0.1}" -p "${DAGSTER_PORT:-3000}" "$@"
