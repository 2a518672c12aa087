"""Steps on Celery workers, history in Postgres: the 16 embedding shards and dedup_job run through
the Celery executor on two `dagster-celery` worker processes, with deploy/dagster.postgres.yaml as
the instance and deploy/celery.yaml as the workers' config (kombu's SQLAlchemy transport on the same
Postgres as broker and result backend), and give what one process gives on the same folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from core.sample import build_sample_set
from core.settings import Settings
from core.sharding import SHARD_KEYS
from definitions import DEDUP_JOB, build_definitions, model_id_for
from resources.lancedb import LanceDBResource

from distributed_support import PROJECT_ROOT, VENV_BIN, dagster_home_from, descendants, is_alive, process_env, start_process, stop_process_tree, wait_for

WORKERS = ("worker1", "worker2")
WORKER_START_TIMEOUT_S = 180
DRIVER_TIMEOUT_S = 900


def vector_table(settings: Settings) -> pd.DataFrame:
    frame = LanceDBResource(uri=settings.vector_store_uri).open_vectors(model_id_for(settings)).to_arrow().to_pandas()
    frame["vector"] = [np.asarray(v, np.float32) for v in frame["vector"]]
    return frame.set_index("pixel_hash").sort_index()


@pytest.fixture(scope="module")
def celery_runs(postgres, tmp_path_factory):
    base = tmp_path_factory.mktemp("celery")
    images = base / "images"
    build_sample_set(images)
    postgres.create_database("celery_test")
    broker = postgres.sqlalchemy_url("celery_test", "sqla+postgresql+psycopg2")
    backend = postgres.sqlalchemy_url("celery_test", "db+postgresql+psycopg2")
    # The sample is mostly planted copies by design; its duplicate-fraction gate would block it.
    distributed = Settings(
        image_root=str(images), out_dir=str(base / "distributed"), embedder="offline", max_duplicate_fraction=1.0,
        executor="celery", celery_broker_url=broker, celery_backend_url=backend,
    )
    home = dagster_home_from("dagster.postgres.yaml", base / "dagster_home")
    instance_url = postgres.sqlalchemy_url("celery_test")
    env = process_env(distributed, {"DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": instance_url, "PYTHONPATH": str(PROJECT_ROOT)})

    workers = {}
    try:
        for name in WORKERS:
            log = base / f"{name}.log"
            # The deploy/celery.yaml start command; `-c 1`: one step at a time per worker.
            command = [str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", "deploy/celery.yaml", "-n", name, "--", "-c", "1"]
            workers[name] = (start_process(command, env, log), log)
        for name, (process, log) in workers.items():
            wait_for(lambda: f"{name}@" in log.read_text(errors="replace") and " ready." in log.read_text(errors="replace"), f"celery {name} to be ready", WORKER_START_TIMEOUT_S, [log], [process])

        report = base / "driver.json"
        driver = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "tests" / "distributed" / "celery_driver.py"), str(report)],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S,
        )
        worker_pids = {name: {process.pid} | descendants(process.pid) for name, (process, _) in workers.items()}
    finally:
        stopped = {name: stop_process_tree(process) for name, (process, _) in workers.items()}
    assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-6000:]
    found = json.loads(report.read_text())

    # What was recorded in the Postgres run storage, read back through the deploy file's instance.
    env_before = {key: os.environ.get(key) for key in ("DAGSTER_POSTGRES_URL",)}
    os.environ["DAGSTER_POSTGRES_URL"] = instance_url
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            found["storage"] = type(instance.run_storage).__name__
            found["status"] = {name: instance.get_run_by_id(run_id).status for name, run_id in found["runs"].items()}
            found["step_pids"] = {
                name: {entry.dagster_event.step_key: entry.dagster_event.pid for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)}
                for name, run_id in found["runs"].items()
            }
            found["dedup_metadata"] = {
                entry.dagster_event.asset_key.to_user_string(): {k: getattr(v, "value", v) for k, v in entry.asset_materialization.metadata.items()}
                for entry in instance.all_logs(found["runs"]["dedup"], of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            }
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    # The same folder in one process, in a throwaway instance.
    single = Settings(image_root=str(images), out_dir=str(base / "single"), embedder="offline", max_duplicate_fraction=1.0)
    with dg.instance_for_test() as instance:
        result = build_definitions(single).resolve_job_def(DEDUP_JOB).execute_in_process(instance=instance, raise_on_error=False)
    found.update(distributed=distributed, single=single, single_success=result.success, worker_pids=worker_pids, stopped=stopped)
    return found


def test_every_run_succeeded_in_the_postgres_run_storage(celery_runs):
    assert celery_runs["storage"] == "PostgresRunStorage"
    assert set(celery_runs["runs"]) == {"catalog", "dedup", *(f"shard-{key}" for key in SHARD_KEYS)}
    failed = {name: status for name, status in celery_runs["status"].items() if status != dg.DagsterRunStatus.SUCCESS}
    assert not failed


def test_steps_ran_in_both_workers_and_never_in_the_orchestrator_or_the_test(celery_runs):
    step_pids = {pid for steps in celery_runs["step_pids"].values() for pid in steps.values()}
    assert all(celery_runs["step_pids"][f"shard-{key}"] for key in SHARD_KEYS)  # each shard run had its step
    assert len(celery_runs["step_pids"]["dedup"]) >= 6  # the whole graph, step by step
    assert os.getpid() not in step_pids and celery_runs["orchestrator_pid"] not in step_pids
    by_worker = {name: step_pids & pids for name, pids in celery_runs["worker_pids"].items()}
    assert step_pids == set().union(*by_worker.values()), "a step ran outside the two workers"
    assert all(by_worker.values()), f"steps per worker: {by_worker}"


def test_workers_were_stopped_by_pid(celery_runs):
    for name, pids in celery_runs["stopped"].items():
        assert len(pids) >= 2, name  # the dagster-celery command and the celery worker below it
        assert not [pid for pid in pids if is_alive(pid)], name


def test_vector_table_equals_the_single_process_one(celery_runs):
    assert celery_runs["single_success"]
    distributed, single = vector_table(celery_runs["distributed"]), vector_table(celery_runs["single"])
    assert distributed.index.is_unique and len(distributed) == len(single) > 0
    assert list(distributed.index) == list(single.index)
    left, right = np.stack(distributed["vector"]), np.stack(single["vector"])
    # The tolerance of tests/assets/test_sharded_embedding.py: batches differ, kernels round differently.
    assert np.allclose(left, right, rtol=0, atol=1e-6), f"largest difference {np.abs(left - right).max():.3g}"
    # Every vector came from a shard run's checkpoints, none from dedup_job's own embedding step.
    assert celery_runs["dedup_metadata"]["image_embeddings"]["embedded_this_run"] == 0
    assert celery_runs["dedup_metadata"]["image_vectors"]["inserted_this_run"] == len(single)


def test_scores_groups_and_exports_equal_the_single_process_ones(celery_runs):
    for export in ("uniqueness.csv", "duplicates.csv", "clean.csv", "rejected.csv"):
        distributed = pd.read_csv(Path(celery_runs["distributed"].out_dir) / export)
        single = pd.read_csv(Path(celery_runs["single"].out_dir) / export)
        assert len(distributed) > 0, export
        pd.testing.assert_frame_equal(distributed, single, check_exact=False, atol=1e-6, obj=export)
    labels = set(pd.read_csv(Path(celery_runs["distributed"].out_dir) / "uniqueness.csv")["label"])
    assert labels == {"duplicate", "near_duplicate", "unique"}
