"""The daemon, for real: `dagster-daemon run` on the Postgres instance of deploy/dagster.postgres.yaml
runs the schedule, which launches dedup_job over the folder, then the arrival sensor, which launches
it by itself when images are dropped into the folder; that run embeds only the new contents and its
results equal a full run."""

import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from distributed_support import (
    PROJECT_ROOT,
    VENV_BIN,
    dagster_home_from,
    is_alive,
    process_env,
    start_process,
    stop_process_tree,
    wait_for,
)

from imgdedup_pipeline.automation.arrivals import LISTING_TAG, TRIGGER_TAG
from imgdedup_pipeline.core.sample import build_sample_set
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import DEDUP_JOB, build_definitions

RUN_TIMEOUT_S = 600
CLI_TIMEOUT_S = 300


def catalog_hashes(out_dir: Path) -> set[str]:
    (catalog,) = (out_dir / "state").glob("catalog-*.parquet")
    return set(pd.read_parquet(catalog)["pixel_hash"])


def comparable(out_dir: Path) -> pd.DataFrame:
    table = pd.read_csv(out_dir / "uniqueness.csv").sort_values("path", ignore_index=True)
    return table[["path", "uniqueness", "label", "group_id", "duplicate_of", "removed"]]


def finished_runs(instance: dg.DagsterInstance, trigger: str) -> list[dg.DagsterRun] | None:
    """The runs `trigger` (sensor or schedule) launched, oldest first, once one has ended (None
    before); a run that failed ends the wait at once."""
    runs = list(reversed(instance.get_runs(filters=dg.RunsFilter(tags={TRIGGER_TAG: trigger}))))
    ended = [
        run
        for run in runs
        if run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    ]
    return runs if ended else None


def switch(kind: str, name: str, state: str, env: dict[str, str]) -> None:
    """`dagster sensor|schedule start|stop NAME`: what an operator does once (or in the UI)."""
    command = [str(VENV_BIN / "dagster"), kind, state, name, "-w", "workspace.yaml"]
    completed = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def embedded_this_run(instance: dg.DagsterInstance, run_id: str) -> int:
    (entry,) = [
        e
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        if e.dagster_event.asset_key.to_user_string() == "image_embeddings"
    ]
    return entry.asset_materialization.metadata["embedded_this_run"].value


@pytest.fixture(scope="module")
def daemon_runs(postgres, tmp_path_factory):
    base = tmp_path_factory.mktemp("daemon")
    pool = build_sample_set(base / "pool")
    files = sorted(p for p in pool["files"] if p not in pool["corrupt"])
    first, arriving = files[::2], files[1::2]
    images, staging = base / "images", base / "staging" / "arrived"
    for folder, batch in ((images, first), (staging, arriving)):
        for relative in batch:
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base / "pool" / relative, folder / relative)

    postgres.create_database("daemon_test")
    instance_url = postgres.sqlalchemy_url("daemon_test")
    # The schedule every minute here (02:00 by default), so that the daemon fires it during the test.
    settings = Settings(
        image_root=str(images),
        out_dir=str(base / "incremental"),
        embedder="offline",
        max_duplicate_fraction=1.0,
        dedup_schedule_cron="* * * * *",
    )
    home = dagster_home_from("dagster.postgres.yaml", base / "dagster_home")
    env = process_env(
        settings, {"DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": instance_url, "PYTHONPATH": str(PROJECT_ROOT)}
    )
    previous_url = os.environ.get("DAGSTER_POSTGRES_URL")
    os.environ["DAGSTER_POSTGRES_URL"] = instance_url  # for this process's view of the instance

    found: dict = {"settings": settings}
    log = base / "daemon.log"
    daemon = start_process([str(VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, log)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            found["storage"] = type(instance.run_storage).__name__
            switch("schedule", "nightly_dedup_schedule", "start", env)
            (found["schedule_run"],) = wait_for(
                lambda: finished_runs(instance, "schedule"), "the schedule's run", RUN_TIMEOUT_S, [log], [daemon]
            )
            found["hashes_before"] = catalog_hashes(Path(settings.out_dir))
            # Only the sensor from here on (a schedule firing every minute would race it).
            switch("schedule", "nightly_dedup_schedule", "stop", env)
            switch("sensor", "new_images_sensor", "start", env)
            # No other call from here on: new images arrive (in one rename, so that no listing sees
            # half of them), the sensor sees them and the daemon launches the run.
            staging.rename(images / "arrived")
            (found["sensor_run"],) = wait_for(
                lambda: finished_runs(instance, "sensor"),
                "the sensor's run for the new images",
                RUN_TIMEOUT_S,
                [log],
                [daemon],
            )
            found["embedded"] = [
                embedded_this_run(instance, found[run].run_id)
                for run in ("schedule_run", "sensor_run")
                if found[run].status == dg.DagsterRunStatus.SUCCESS
            ]
            found["heartbeats"] = set(instance.get_daemon_heartbeats())
            found["hashes_after"] = catalog_hashes(Path(settings.out_dir))
    finally:
        found["stopped"] = stop_process_tree(daemon)
        if previous_url is None:
            os.environ.pop("DAGSTER_POSTGRES_URL", None)
        else:
            os.environ["DAGSTER_POSTGRES_URL"] = previous_url

    full = Settings(image_root=str(images), out_dir=str(base / "full"), embedder="offline", max_duplicate_fraction=1.0)
    with dg.instance_for_test() as instance:
        found["full_success"] = (
            build_definitions(full)
            .resolve_job_def(DEDUP_JOB)
            .execute_in_process(instance=instance, raise_on_error=False)
            .success
        )
    found["full"] = full
    return found


def test_the_daemon_launched_the_schedules_run_then_the_sensors_run(daemon_runs):
    assert daemon_runs["storage"] == "PostgresRunStorage"
    runs = [daemon_runs["schedule_run"], daemon_runs["sensor_run"]]
    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS] * 2, [(run.run_id, run.status) for run in runs]
    assert all(run.job_name == DEDUP_JOB for run in runs)
    assert runs[0].tags[LISTING_TAG] != runs[1].tags[LISTING_TAG]  # one run per state of the folder
    # The sensor, the schedule and the run queue all ran in the daemon.
    assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= daemon_runs["heartbeats"]


def test_the_arrival_run_embedded_only_the_new_contents(daemon_runs):
    before, after = daemon_runs["hashes_before"], daemon_runs["hashes_after"]
    assert after > before  # the arrivals brought new contents ...
    assert daemon_runs["embedded"] == [len(before), len(after - before)]  # ... and only they were embedded


def test_the_arrival_run_equals_a_full_run(daemon_runs):
    assert daemon_runs["full_success"]
    incremental, full = comparable(Path(daemon_runs["settings"].out_dir)), comparable(Path(daemon_runs["full"].out_dir))
    assert any(path.startswith("arrived/") for path in incremental["path"])
    pd.testing.assert_frame_equal(incremental, full, check_exact=False, atol=1e-6)


def test_the_daemon_and_its_children_were_stopped_by_pid(daemon_runs):
    stopped = daemon_runs["stopped"]
    assert len(stopped) >= 2  # the daemon and its code server at least
    assert not [pid for pid in stopped if is_alive(pid)]
