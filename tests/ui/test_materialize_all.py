"""The README's UI flow, clicked in a real browser: `scripts/ui.sh` on a fresh instance opens on
the demo sample, one click on "Materialize all" of the dedup group runs the whole graph with no
confirmation dialog, and every asset (training_manifest included) is materialized and every check
passes. The screenshots it takes are the README's (`scripts/docs_screenshots.py` copies them)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster_server import RUN_TIMEOUT_S, TERMINAL_STATUSES, DagsterDev, free_port

from imgdedup_pipeline.checks import all_checks
from imgdedup_pipeline.definitions import ALL_ASSETS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUNS = "{ runsOrError { __typename ... on Runs { results { runId status } } } }"


@pytest.fixture(scope="module")
def ui_sh(tmp_path_factory):
    """`scripts/ui.sh` as a user starts it, with its own empty DAGSTER_HOME and demo folder."""
    base = tmp_path_factory.mktemp("ui-sh")
    home, demo = base / "dagster-home", base / "demo-output"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGDEDUP_", "DAGSTER_"))}
    port = free_port()
    env.update(DAGSTER_HOME=str(home), IMGDEDUP_DEMO_DIR=str(demo), DAGSTER_PORT=str(port))
    log_path = base / "ui-sh.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["bash", "scripts/ui.sh"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DagsterDev(process, port, log_path, demo / "results")
    server.home = home
    try:
        server.repository = server.wait_until_loaded()
        yield server
    finally:
        server.stop()


def wait_for_single_run(server: DagsterDev) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = server.graphql(RUNS)["runsOrError"]["results"]
        if runs and runs[0]["status"] in TERMINAL_STATUSES:
            assert len(runs) == 1, runs
            return runs[0]
        time.sleep(2)
    raise AssertionError(f"the run did not finish within {RUN_TIMEOUT_S} s:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def clicked_run(ui_sh, browser, artifacts_dir):
    ui_sh.graphql("mutation { setNuxSeen }")  # the first-visit newsletter dialog, not ours
    # A wide viewport drawn at 2/3 scale: the graph fits at a zoom where nodes show status and checks.
    page = browser.new_page(viewport={"width": 2400, "height": 1300}, device_scale_factor=0.6667)
    location = ui_sh.repository["location"]["name"]
    page.goto(f"{ui_sh.url}/locations/{location}/asset-groups/dedup", wait_until="networkidle")
    page.get_by_role("button", name="Materialize all").click()
    run = wait_for_single_run(ui_sh)
    # No "are you sure" dialog came up between the click and the run.
    assert page.get_by_text("Are you sure").count() == 0
    page.reload(wait_until="networkidle")
    page.wait_for_timeout(3000)
    page.screenshot(path=str(artifacts_dir / "asset-graph.png"))
    launchpad = browser.new_page(viewport={"width": 1600, "height": 900})
    launchpad.goto(f"{ui_sh.url}/locations/{location}/jobs/dedup_job/playground", wait_until="networkidle")
    launchpad.wait_for_timeout(2000)
    launchpad.screenshot(path=str(artifacts_dir / "launchpad.png"))
    return run


def test_one_click_materializes_every_asset_and_passes_every_check(ui_sh, clicked_run):
    assert clicked_run["status"] == "SUCCESS", ui_sh.log_tail()
    with dg.DagsterInstance.from_config(str(ui_sh.home)) as instance:
        materializations = instance.get_records_for_run(
            clicked_run["runId"], of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        evaluations = instance.get_records_for_run(
            clicked_run["runId"], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
    materialized = {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in materializations}
    expected = {key.to_user_string() for assets in ALL_ASSETS for key in assets.keys}
    assert expected <= materialized and "training_manifest" in materialized
    outcomes = {
        r.event_log_entry.dagster_event.event_specific_data.check_name: r.event_log_entry.dagster_event.event_specific_data.passed
        for r in evaluations
    }
    expected_checks = {spec.name for check in all_checks() for spec in check.check_specs}
    assert outcomes == dict.fromkeys(expected_checks, True)
    assert (ui_sh.out_dir / "clean.csv").is_file() and (ui_sh.out_dir / "training_manifest.csv").is_file()


def test_the_report_link_opens_in_the_browser(ui_sh, clicked_run, browser):
    with dg.DagsterInstance.from_config(str(ui_sh.home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("duplicates_collection"))
    url = event.asset_materialization.metadata["report_url"].value
    assert url.startswith("http://127.0.0.1:")
    page = browser.new_page()
    response = page.goto(url)
    assert response is not None and response.status == 200
    assert page.locator("section.group").count() > 0


def test_the_ui_starts_without_warnings(ui_sh, clicked_run):
    """`scripts/ui.sh` starts `dg dev` from DAGSTER_HOME: neither `dagster dev`'s supersession
    warning nor the one about a dagster.yaml in the current folder that the instance ignores."""
    log = ui_sh.log_path.read_text(errors="replace")
    assert "Launching Dagster services" in log
    assert "superseded" not in log
    assert "will not be used" not in log
