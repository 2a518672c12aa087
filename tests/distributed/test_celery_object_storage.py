"""No shared disk: the Celery run of test_celery.py (the catalog, the 16 embedding shards, then
dedup_job, on two `dagster-celery` workers with the Postgres instance and broker) where moto's S3
server, on loopback, is the only storage the processes share. The orchestrating process and each
worker have a working folder of their own (`IMGDEDUP_OUT_DIR` and `DAGSTER_HOME`), and
`IMGDEDUP_SHARED_STORAGE_URI=s3://...` puts the intermediate tables, the embedding checkpoints,
the export sets and the vector table in the bucket. The results equal a single-process run on one
disk, and no step output lands in a local folder."""

import dataclasses
import io
import json
import os
import socket
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from distributed_support import (
    PROJECT_ROOT,
    dagster_home_from,
    process_env,
)

# test_celery.py's kill of a worker process mid-shard, run here on this module's cluster (pytest
# resolves the fixture's `cluster` and `celery_runs` to the ones below): the finished batches are
# objects in the bucket, and the rerun, on whichever worker takes it, embeds only the rest.
from test_celery import (
    WORKERS,
    Cluster,
    celery_settings,
    dedup_in_one_process,
    drive_and_record,
    killed_shard,  # noqa: F401  (a fixture, used by the two tests below)
    running_workers,
    test_a_worker_killed_mid_shard_fails_that_run_and_keeps_its_finished_batches,  # noqa: F401
    test_rerunning_the_killed_shard_embeds_only_what_no_finished_batch_holds,  # noqa: F401
    vector_table,
)

from imgdedup_pipeline.core.export_set import MANIFEST_FILE
from imgdedup_pipeline.core.object_store import ObjectFolder
from imgdedup_pipeline.core.sample import build_sample_set
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.core.sharding import SHARD_KEYS
from imgdedup_pipeline.core.shared_exports import CURRENT_POINTER, published_export, published_manifest
from imgdedup_pipeline.definitions import ALL_ASSETS

moto_server = pytest.importorskip("moto.server", reason="needs the dev extra: pip install 'moto[server]'")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("dagster_aws", reason="needs the distributed extra: pip install -e '.[distributed]'")

BUCKET = "imgdedup-shared"
SHARED_URI = f"s3://{BUCKET}/team"
EXPORTS = ("uniqueness.csv", "duplicates.csv", "clean.csv", "rejected.csv")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_environment():
    """moto's S3 server on loopback with an empty bucket; the AWS_* variables that reach it (for
    boto3, dagster-aws and LanceDB), set in this process for the module and given to every other."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    variables = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": endpoint,  # LanceDB
        "AWS_ENDPOINT_URL": endpoint,  # boto3
        "AWS_ALLOW_HTTP": "true",
    }
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield variables
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


def process_settings(settings: Settings, folder: Path) -> Settings:
    return dataclasses.replace(settings, out_dir=str(folder / "out"))


@pytest.fixture(scope="module")
def cluster(postgres, s3_environment, tmp_path_factory):
    """Two Celery workers (deploy/celery.yaml's command) and an orchestrator, each with its own
    working folder, sharing only the Postgres instance and the S3 bucket; every worker process is
    stopped by PID at the end."""
    base = tmp_path_factory.mktemp("celery-s3")
    images = base / "images"
    build_sample_set(images)
    postgres.create_database("celery_s3_test")
    instance_url = postgres.sqlalchemy_url("celery_s3_test")
    shared = celery_settings(postgres, "celery_s3_test", images, base / "unused", shared_storage_uri=SHARED_URI)

    def environment(folder: Path) -> dict[str, str]:
        home = dagster_home_from("dagster.postgres.yaml", folder / "dagster_home")
        extra = {"DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": instance_url, "PYTHONPATH": str(PROJECT_ROOT)}
        return process_env(process_settings(shared, folder), {**extra, **s3_environment})

    orchestrator = base / "orchestrator"
    with running_workers(base, lambda name: environment(base / name), instance_url) as workers:
        env = environment(orchestrator)
        yield Cluster(
            base=base,
            settings=process_settings(shared, orchestrator),
            home=Path(env["DAGSTER_HOME"]),
            env=env,
            workers=workers,
        )


def local_files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()} if folder.is_dir() else set()


@pytest.fixture(scope="module")
def celery_runs(cluster):
    """The catalog, the 16 shards and dedup_job on the workers; the same images in one process on
    one disk, without shared storage."""
    found = drive_and_record(cluster)
    found["local_files"] = {name: local_files(cluster.base / name / "out") for name in (*WORKERS, "orchestrator")}
    single, single_success = dedup_in_one_process(cluster.settings, cluster.base / "single", shared_storage_uri=None)
    found.update(distributed=cluster.settings, single=single, single_success=single_success)
    found["bucket"] = ObjectFolder.from_uri(SHARED_URI, boto3.client("s3"))
    found["bucket_names"] = set(found["bucket"].names())  # before the killed-shard tests add checkpoints
    return found


def test_every_run_succeeded(celery_runs):
    assert set(celery_runs["runs"]) == {"catalog", "dedup", *(f"shard-{key}" for key in SHARD_KEYS)}
    failed = {name: status for name, status in celery_runs["status"].items() if status != dg.DagsterRunStatus.SUCCESS}
    assert not failed
    assert all(run["success"] for run in celery_runs["runs"].values())


def test_steps_ran_in_both_workers_and_never_in_the_orchestrator(celery_runs):
    step_pids = {pid for steps in celery_runs["step_pids"].values() for pid in steps.values()}
    assert all(celery_runs["step_pids"][f"shard-{key}"] for key in SHARD_KEYS)
    assert len(celery_runs["step_pids"]["dedup"]) >= 6
    assert os.getpid() not in step_pids and celery_runs["orchestrator_pid"] not in step_pids
    by_worker = {name: step_pids & pids for name, pids in celery_runs["worker_pids"].items()}
    assert step_pids == set().union(*by_worker.values()), "a step ran outside the two workers"
    assert all(by_worker.values()), f"steps per worker: {by_worker}"


def test_vector_table_on_s3_equals_the_single_process_one(celery_runs):
    assert celery_runs["distributed"].vector_store_uri == f"{SHARED_URI}/lancedb"
    assert celery_runs["single_success"]
    distributed, single = vector_table(celery_runs["distributed"]), vector_table(celery_runs["single"])
    assert distributed.index.is_unique and len(distributed) == len(single) > 0
    assert list(distributed.index) == list(single.index)
    left, right = np.stack(distributed["vector"]), np.stack(single["vector"])
    assert np.allclose(left, right, rtol=0, atol=1e-6), f"largest difference {np.abs(left - right).max():.3g}"
    # dedup_job embedded nothing itself: it found every shard's checkpoints on S3, whichever
    # worker had written them, and inserted them.
    assert celery_runs["dedup_metadata"]["image_embeddings"]["embedded_this_run"] == 0
    assert celery_runs["dedup_metadata"]["image_vectors"]["inserted_this_run"] == len(single)


def test_published_exports_on_s3_equal_the_single_process_ones(celery_runs):
    bucket = celery_runs["bucket"]
    manifest = published_manifest(bucket)
    assert manifest["run_id"] == celery_runs["runs"]["dedup"]["run_id"]
    for export in (*EXPORTS, "training_manifest.csv"):
        data = published_export(bucket, export)
        assert data is not None, export
        distributed = pd.read_csv(io.BytesIO(data))
        single = pd.read_csv(Path(celery_runs["single"].out_dir) / export)
        assert len(distributed) > 0, export
        pd.testing.assert_frame_equal(distributed, single, check_exact=False, atol=1e-6, obj=export)
    labels = set(pd.read_csv(io.BytesIO(published_export(bucket, "uniqueness.csv")))["label"])
    assert labels == {"duplicate", "near_duplicate", "unique"}


def test_the_shared_state_is_in_the_bucket_and_no_step_output_in_a_local_folder(celery_runs):
    bucket, dedup_run, names = (
        celery_runs["bucket"],
        celery_runs["runs"]["dedup"]["run_id"],
        celery_runs["bucket_names"],
    )
    assets = {key.to_user_string() for asset in ALL_ASSETS for key in asset.keys}
    assert {f"state/assets/{name}" for name in assets} <= names
    assert [name for name in names if name.startswith("state/catalog-")]  # for any worker's next catalog step
    assert f"exports/{CURRENT_POINTER}" in names and f"exports/{dedup_run}/{MANIFEST_FILE}" in names
    assert any(name.startswith("lancedb/") for name in names)
    assert not [name for name in names if "embedding-checkpoints" in name]  # inserted, then cleared
    assert json.loads(bucket.get(f"exports/{dedup_run}/{MANIFEST_FILE}"))["run_id"] == dedup_run

    local = celery_runs["local_files"]
    assert not local["orchestrator"], "the orchestrating process wrote into its working folder"
    for worker in WORKERS:
        assert local[worker], f"{worker} never used its working folder"  # its caches, at least
        shared_outputs = [
            name
            for name in local[worker]
            if name.startswith(
                ("exports/", "state/assets/", "state/embedding-checkpoints/", "state/lancedb/", "state/catalog-")
            )
            or name.endswith((".csv", ".html"))
        ]
        assert not shared_outputs, f"{worker} wrote shared outputs locally: {shared_outputs[:5]}"
