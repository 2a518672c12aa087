"""Steps on Celery workers, history in Postgres: the 16 embedding shards and dedup_job run through
the Celery executor on two `dagster-celery` worker processes, with deploy/dagster.postgres.yaml as
the instance and deploy/celery.yaml as the workers' config (kombu's SQLAlchemy transport on the same
Postgres as broker and result backend), and give what one process gives on the same folder; a
worker process killed in the middle of a shard fails that run only, and running that shard again
embeds only what no finished batch holds."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from distributed_support import (
    PROJECT_ROOT,
    celery_worker_command,
    dagster_home_from,
    descendants,
    is_alive,
    process_env,
    start_process,
    stop_process_tree,
    wait_for,
)
from PIL import Image

from imgdedup_pipeline.core.checkpoints import EmbeddingCheckpoint
from imgdedup_pipeline.core.sample import build_sample_set
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.core.sharding import SHARD_KEYS
from imgdedup_pipeline.definitions import DEDUP_JOB, SHARDED_EMBEDDING_JOB, build_definitions, model_id_for
from imgdedup_pipeline.resources.lancedb import LanceDBResource, table_name_for
from imgdedup_pipeline.resources.output_store import OutputStoreResource

WORKERS = ("worker1", "worker2")
WORKER_START_TIMEOUT_S = 180
DRIVER_TIMEOUT_S = 900
RUN_TIMEOUT_S = 300
# Random images: about 75 new contents per shard, so a shard takes several batches of 32.
NEW_IMAGES = 1200


def vector_table(settings: Settings) -> pd.DataFrame:
    frame = LanceDBResource(uri=settings.vector_store_uri).open_vectors(model_id_for(settings)).to_arrow().to_pandas()
    frame["vector"] = [np.asarray(v, np.float32) for v in frame["vector"]]
    return frame.set_index("pixel_hash").sort_index()


@dataclass(frozen=True)
class Cluster:
    """Two running workers on one folder, and how to reach them and their instance."""

    base: Path
    settings: Settings
    home: Path
    env: dict[str, str]
    workers: dict[str, subprocess.Popen]

    def drive(self, *stages: str, name: str = "driver") -> dict:
        """Run celery_driver.py with these stages; its report."""
        return finish_driver(self.start_driver(*stages, name=name), self.base / f"{name}.json")

    def start_driver(self, *stages: str, name: str = "driver") -> subprocess.Popen:
        command = [
            sys.executable,
            str(PROJECT_ROOT / "tests" / "distributed" / "celery_driver.py"),
            str(self.base / f"{name}.json"),
            *stages,
        ]
        return subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def worker_pids(self) -> dict[str, set[int]]:
        return {name: {process.pid} | descendants(process.pid) for name, process in self.workers.items()}


def finish_driver(driver: subprocess.Popen, report: Path) -> dict:
    output, _ = driver.communicate(timeout=DRIVER_TIMEOUT_S)
    assert driver.returncode == 0, output[-6000:]
    return json.loads(report.read_text())


def step_pids(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    return {
        entry.dagster_event.step_key: entry.dagster_event.pid
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    }


def materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    return {
        entry.dagster_event.asset_key.to_user_string(): {
            k: getattr(v, "value", v) for k, v in entry.asset_materialization.metadata.items()
        }
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    }


def celery_settings(postgres, database: str, images: Path, out_dir: Path, **more) -> Settings:
    """The sample's settings with Celery steps, broker and result backend on `database`.
    The sample is mostly planted copies by design; its duplicate-fraction gate would block it."""
    return Settings(
        image_root=str(images),
        out_dir=str(out_dir),
        embedder="offline",
        max_duplicate_fraction=1.0,
        executor="celery",
        celery_broker_url=postgres.sqlalchemy_url(database, "sqla+postgresql+psycopg2"),
        celery_backend_url=postgres.sqlalchemy_url(database, "db+postgresql+psycopg2"),
        **more,
    )


@contextmanager
def running_workers(base: Path, environment_for: Callable[[str], dict[str, str]], instance_url: str):
    """WORKERS started with deploy/celery.yaml's command, each with `environment_for(name)`, and
    this process pointed at the instance too; at the end every worker process is stopped by PID."""
    previous_url = os.environ.get("DAGSTER_POSTGRES_URL")
    os.environ["DAGSTER_POSTGRES_URL"] = instance_url  # this process reads the instance too
    workers, stopped = {}, {}
    try:
        for name in WORKERS:
            log = base / f"{name}.log"
            workers[name] = start_process(celery_worker_command(name), environment_for(name), log)
            wait_for(
                lambda: " ready." in log.read_text(errors="replace"),  # noqa: B023 (waited for here)
                f"celery {name} to be ready",
                WORKER_START_TIMEOUT_S,
                [log],
                [workers[name]],
            )
        yield workers
    finally:
        stopped = {name: stop_process_tree(process) for name, process in workers.items()}
        if previous_url is None:
            os.environ.pop("DAGSTER_POSTGRES_URL", None)
        else:
            os.environ["DAGSTER_POSTGRES_URL"] = previous_url
    for name, pids in stopped.items():
        assert len(pids) >= 2, name  # the dagster-celery command and the celery worker below it
        assert not [pid for pid in pids if is_alive(pid)], f"{name} left processes running"


def drive_and_record(cluster: Cluster) -> dict:
    """The driver's report, with each run's status, step processes and dedup_job's metadata as the
    instance recorded them, and the workers' processes."""
    found = cluster.drive()
    found["worker_pids"] = cluster.worker_pids()
    with dg.DagsterInstance.from_config(str(cluster.home)) as instance:
        found["storage"] = type(instance.run_storage).__name__
        found["status"] = {name: instance.get_run_by_id(run["run_id"]).status for name, run in found["runs"].items()}
        found["step_pids"] = {name: step_pids(instance, run["run_id"]) for name, run in found["runs"].items()}
        found["dedup_metadata"] = materializations(instance, found["runs"]["dedup"]["run_id"])
    return found


def dedup_in_one_process(settings: Settings, out_dir: Path, **overrides) -> tuple[Settings, bool]:
    """dedup_job on the same folder in this process, without Celery (and `overrides`): its settings
    and whether it succeeded."""
    single = dataclasses.replace(
        settings,
        out_dir=str(out_dir),
        executor="in_process",
        celery_broker_url=None,
        celery_backend_url=None,
        **overrides,
    )
    with dg.instance_for_test() as instance:
        result = (
            build_definitions(single)
            .resolve_job_def(DEDUP_JOB)
            .execute_in_process(instance=instance, raise_on_error=False)
        )
    return single, result.success


@pytest.fixture(scope="module")
def cluster(postgres, tmp_path_factory):
    """PostgreSQL database, instance (deploy/dagster.postgres.yaml) and two Celery workers started
    with deploy/celery.yaml's command; at the end every worker process is stopped by PID."""
    base = tmp_path_factory.mktemp("celery")
    images = base / "images"
    build_sample_set(images)
    postgres.create_database("celery_test")
    settings = celery_settings(postgres, "celery_test", images, base / "distributed")
    home = dagster_home_from("dagster.postgres.yaml", base / "dagster_home")
    instance_url = postgres.sqlalchemy_url("celery_test")
    env = process_env(
        settings, {"DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": instance_url, "PYTHONPATH": str(PROJECT_ROOT)}
    )
    with running_workers(base, lambda name: env, instance_url) as workers:
        yield Cluster(base=base, settings=settings, home=home, env=env, workers=workers)


@pytest.fixture(scope="module")
def celery_runs(cluster):
    """The catalog, the 16 shards and dedup_job on the workers; the same folder in one process."""
    found = drive_and_record(cluster)
    single, single_success = dedup_in_one_process(cluster.settings, cluster.base / "single")
    found.update(distributed=cluster.settings, single=single, single_success=single_success)
    return found


def test_every_run_succeeded_in_the_postgres_run_storage(celery_runs):
    assert celery_runs["storage"] == "PostgresRunStorage"
    assert set(celery_runs["runs"]) == {"catalog", "dedup", *(f"shard-{key}" for key in SHARD_KEYS)}
    failed = {name: status for name, status in celery_runs["status"].items() if status != dg.DagsterRunStatus.SUCCESS}
    assert not failed
    assert all(run["success"] for run in celery_runs["runs"].values())


def test_steps_ran_in_both_workers_and_never_in_the_orchestrator_or_the_test(celery_runs):
    step_pids = {pid for steps in celery_runs["step_pids"].values() for pid in steps.values()}
    assert all(celery_runs["step_pids"][f"shard-{key}"] for key in SHARD_KEYS)  # each shard run had its step
    assert len(celery_runs["step_pids"]["dedup"]) >= 6  # the whole graph, step by step
    assert os.getpid() not in step_pids and celery_runs["orchestrator_pid"] not in step_pids
    by_worker = {name: step_pids & pids for name, pids in celery_runs["worker_pids"].items()}
    assert step_pids == set().union(*by_worker.values()), "a step ran outside the two workers"
    assert all(by_worker.values()), f"steps per worker: {by_worker}"


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


def output_store(settings: Settings) -> OutputStoreResource:
    """The output store the steps use: the orchestrator's folder, or the shared storage."""
    return OutputStoreResource(out_dir=settings.out_dir, shared_storage_uri=settings.shared_storage_uri)


def catalog_hashes(settings: Settings) -> set[str]:
    catalog = output_store(settings).read_catalog(Path(settings.image_root), warn=pytest.fail)
    assert catalog is not None
    return set(catalog["pixel_hash"])


def running_shard_step(instance: dg.DagsterInstance, shard: str, checkpoint: EmbeddingCheckpoint) -> int | None:
    """The PID running the shard's step, once the step has written its first batch (None before)."""
    (run, *_) = instance.get_runs(
        filters=dg.RunsFilter(job_name=SHARDED_EMBEDDING_JOB, tags={"dagster/partition": shard}), limit=1
    ) or [None]
    if run is None or run.status != dg.DagsterRunStatus.STARTED or not checkpoint.shards():
        return None
    return step_pids(instance, run.run_id).get("image_embedding_shards")


@pytest.fixture(scope="module")
def killed_shard(cluster, celery_runs):
    """New images arrive; the worker process running the shard with the most of them is killed
    (SIGKILL) after the shard's first batch is checkpointed; then that shard alone runs again."""
    rng = np.random.default_rng(17)
    arrivals = Path(cluster.settings.image_root) / "arrivals"
    arrivals.mkdir()
    for number in range(NEW_IMAGES):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(arrivals / f"{number:04d}.png")
    assert cluster.drive("catalog", name="catalog-again")["runs"]["catalog"]["success"]
    new = catalog_hashes(cluster.settings) - set(vector_table(cluster.settings).index)
    shard, count = Counter(h[0] for h in new).most_common(1)[0]
    checkpoint = output_store(cluster.settings).embedding_checkpoint(table_name_for(model_id_for(cluster.settings)))
    found = {
        "shard": shard,
        "new_in_shard": {h for h in new if h[0] == shard},
        "checkpointed_before": checkpoint.hashes(),
    }

    driver = cluster.start_driver(f"shard:{shard}", name="killed")
    with dg.DagsterInstance.from_config(str(cluster.home)) as instance:
        pid = wait_for(
            lambda: running_shard_step(instance, shard, checkpoint),
            f"shard {shard} to checkpoint its first batch",
            RUN_TIMEOUT_S,
            processes=[driver],
            poll_s=0.05,
        )
        found["killed_pid_was_a_worker_process"] = any(pid in pids for pids in cluster.worker_pids().values())
        os.kill(pid, signal.SIGKILL)
        found["killed"] = finish_driver(driver, cluster.base / "killed.json")["runs"][f"shard-{shard}"]
        found["killed_status"] = instance.get_run_by_id(found["killed"]["run_id"]).status
        found["checkpointed_after_kill"] = checkpoint.hashes()
        found["rerun"] = cluster.drive(f"shard:{shard}", name="rerun")["runs"][f"shard-{shard}"]
        found["rerun_metadata"] = materializations(instance, found["rerun"]["run_id"])["image_embedding_shards"]
        found["checkpointed_after_rerun"] = checkpoint.hashes()
    assert count == len(found["new_in_shard"])
    return found


def test_a_worker_killed_mid_shard_fails_that_run_and_keeps_its_finished_batches(killed_shard):
    assert killed_shard["checkpointed_before"] == set()  # dedup_job inserted and cleared the rest
    assert killed_shard["killed_pid_was_a_worker_process"]
    assert not killed_shard["killed"]["success"] and killed_shard["killed_status"] == dg.DagsterRunStatus.FAILURE
    kept = killed_shard["checkpointed_after_kill"]
    assert kept and kept < killed_shard["new_in_shard"]  # some batches finished, not all


def test_rerunning_the_killed_shard_embeds_only_what_no_finished_batch_holds(killed_shard):
    assert killed_shard["rerun"]["success"]
    metadata, kept = killed_shard["rerun_metadata"], killed_shard["checkpointed_after_kill"]
    assert metadata["contents_in_shard"] == len(killed_shard["new_in_shard"]) + metadata["skipped_in_vector_table"]
    assert metadata["skipped_already_checkpointed"] == len(kept)
    assert metadata["embedded_this_run"] == len(killed_shard["new_in_shard"]) - len(kept)
    assert killed_shard["checkpointed_after_rerun"] == killed_shard["new_in_shard"]  # nothing lost, nothing twice
