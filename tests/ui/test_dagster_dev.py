"""`dg dev` on this project: it starts, its GraphQL API lists every asset and check, and a run
launched through that API materializes the whole graph."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dagster_server import (
    ASSETS_AND_CHECKS,
    LAUNCH_RUN,
    RUN_STATUS,
    RUN_TIMEOUT_S,
    TERMINAL_STATUSES,
    start_dg_dev,
)
from PIL import Image

from imgdedup_pipeline.checks import all_checks
from imgdedup_pipeline.definitions import ALL_ASSETS, CALIBRATION_ASSETS, DEDUP_JOB, SHARDED_ASSETS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagster_dev(ui_images, tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster-home")
    out_dir = tmp_path_factory.mktemp("dagster-dev-out")
    server = start_dg_dev(
        PROJECT_ROOT,
        home,
        out_dir,
        home / "dagster-dev.log",
        IMGDEDUP_IMAGE_ROOT=str(ui_images),
        IMGDEDUP_OUT_DIR=str(out_dir),
        IMGDEDUP_EMBEDDER="offline",
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def finished_run(dagster_dev) -> tuple[str, str]:
    """Launch `dedup_job` through GraphQL (the UI's launch mutation) and wait until it ends."""
    params = {
        "selector": {
            "repositoryLocationName": dagster_dev.repository["location"]["name"],
            "repositoryName": dagster_dev.repository["name"],
            "jobName": DEDUP_JOB,
        },
        # One process for all steps: the same code path as the default multiprocess executor minus
        # a Python start-up (torch import) per step, which would double the test's run time.
        "runConfigData": {"execution": {"config": {"in_process": {}}}},
        "executionMetadata": {"tags": [{"key": "imgdedup/launched_from", "value": "test"}]},
    }
    launched = dagster_dev.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = launched["run"]["status"]
    while status not in TERMINAL_STATUSES and time.monotonic() < deadline:
        time.sleep(2)
        status = dagster_dev.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
    return run_id, status


def test_graphql_lists_every_asset_and_check(dagster_dev):
    nodes = dagster_dev.graphql(ASSETS_AND_CHECKS)["assetNodes"]
    listed_assets = {"/".join(n["assetKey"]["path"]) for n in nodes}
    listed_checks = {
        ("/".join(n["assetKey"]["path"]), check["name"])
        for n in nodes
        for check in n["assetChecksOrError"].get("checks", [])
    }
    assert listed_assets == {
        key.to_user_string() for assets in [*ALL_ASSETS, *CALIBRATION_ASSETS, *SHARDED_ASSETS] for key in assets.keys
    }
    expected_checks = {
        (key.asset_key.to_user_string(), key.name) for checks in all_checks() for key in checks.check_keys
    }
    assert expected_checks and listed_checks == expected_checks


def test_run_launched_through_graphql_succeeds(dagster_dev, finished_run):
    run_id, status = finished_run
    assert status == "SUCCESS", f"run {run_id} ended {status} (or timed out):\n{dagster_dev.log_tail()}"
    for export in ("uniqueness.csv", "clean.csv", "training_manifest.csv", "report.html", "uniqueness_histogram.png"):
        assert (dagster_dev.out_dir / export).is_file(), export


def test_asset_graph_screenshot(dagster_dev, finished_run, chromium, artifacts_dir):
    """The asset graph after the run, with check results, as `test-artifacts/asset-graph.png`."""
    assert finished_run[1] == "SUCCESS"
    dagster_dev.graphql("mutation { setNuxSeen }")  # the first-visit newsletter dialog would cover the graph
    location = dagster_dev.repository["location"]["name"]
    screenshot = artifacts_dir / "asset-graph.png"
    screenshot.unlink(missing_ok=True)
    # A CSS viewport of 2400 x 1200 px drawn at 2/3 scale: wide enough that the graph is shown at
    # a zoom where nodes show their status and asset-check rows.
    chromium(
        f"{dagster_dev.url}/locations/{location}/asset-groups/dedup",
        f"--screenshot={screenshot}",
        "--window-size=2400,1200",
        "--force-device-scale-factor=0.6667",
        "--virtual-time-budget=15000",
        timeout=90,
    )
    with Image.open(screenshot) as image:
        assert image.width >= 1500
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 200
