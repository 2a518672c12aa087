#!/usr/bin/env bash
# Open the Dagster UI on 127.0.0.1:3000 with this project's instance.
#
# Without IMGDEDUP_IMAGE_ROOT it opens on the demo sample (built on first use in demo-output/,
# with the demo's training gate of 0.95, as `imgdedup demo`): click "Materialize all" on the
# dedup group. For your own folder, set IMGDEDUP_IMAGE_ROOT / IMGDEDUP_OUT_DIR before starting, or
# change `resources: image_store` / `output_store` in the launchpad (README, "The Dagster UI").
# A DAGSTER_HOME set by the caller is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}" GX_ANALYTICS_ENABLED=false DAGSTER_DISABLE_TELEMETRY=1
mkdir -p "$DAGSTER_HOME"
[ -e "$DAGSTER_HOME/dagster.yaml" ] || ln -s "$PWD/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
export IMGDEDUP_EMBEDDER="${IMGDEDUP_EMBEDDER:-offline}"
if [ -z "${IMGDEDUP_IMAGE_ROOT:-}" ]; then
    demo="${IMGDEDUP_DEMO_DIR:-$PWD/demo-output}"
    echo "ui: demo sample in $demo/sample-images (set IMGDEDUP_IMAGE_ROOT for your own folder)"
    .venv/bin/imgdedup demo --out "$demo" --sample-only
    export IMGDEDUP_IMAGE_ROOT="$demo/sample-images" IMGDEDUP_OUT_DIR="${IMGDEDUP_OUT_DIR:-$demo/results}"
    export IMGDEDUP_MAX_DUPLICATE_FRACTION="${IMGDEDUP_MAX_DUPLICATE_FRACTION:-0.95}"
fi
# The HTML reports are served on loopback beside the UI, so its report links open (browsers refuse
# file:// links from a web page).
report_port="${IMGDEDUP_REPORT_PORT:-$(( ${DAGSTER_PORT:-3000} + 1 ))}"
export IMGDEDUP_REPORT_BASE_URL="${IMGDEDUP_REPORT_BASE_URL:-http://127.0.0.1:$report_port}"
.venv/bin/imgdedup serve-reports --port "$report_port" &
reports_pid=$!
trap 'kill "$reports_pid" 2>/dev/null || true' EXIT
# Started from DAGSTER_HOME, where dagster.yaml is linked: from the project folder, Dagster would
# warn that the dagster.yaml it sees there is not the instance's.
project="$PWD"
cd "$DAGSTER_HOME"
"$project/.venv/bin/dg" dev -w "$project/workspace.yaml" --host "${DAGSTER_HOST:-127.0.0.1}" --port "${DAGSTER_PORT:-3000}" "$@"
