"""The orchestrator of tests/distributed/test_celery.py, in a process of its own so that
definitions.py reads the test's IMGDEDUP_* settings (IMGDEDUP_EXECUTOR=celery) from a clean
environment: the catalog, the 16 embedding shards (one run each, one after the other: launching
them from several threads at once hung), then dedup_job, every step sent to the Celery workers.

Usage: python tests/distributed/celery_driver.py REPORT.json   (from the repo root, with
DAGSTER_HOME on the Postgres instance). Writes the run ids and this process's PID.
"""
import json
import os
import sys

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

from core.sharding import SHARD_KEYS
from definitions import DEDUP_JOB, SHARDED_EMBEDDING_JOB, defs

SHARD_ASSET = dg.AssetKey("image_embedding_shards")


def main(report_path: str) -> int:
    repository = ReconstructableRepository.for_module("definitions", "defs", working_directory=os.getcwd())
    shard_job = defs.resolve_job_def(SHARDED_EMBEDDING_JOB)
    runs: dict[str, str] = {}
    with dg.DagsterInstance.get() as instance:
        catalog = dg.execute_job(
            repository.get_reconstructable_job(DEDUP_JOB), instance, asset_selection=[dg.AssetKey("raw_images"), dg.AssetKey("rejected_images")]
        )
        runs["catalog"] = catalog.run_id
        for key in SHARD_KEYS:
            result = dg.execute_job(repository.get_reconstructable_job(SHARDED_EMBEDDING_JOB), instance, tags=shard_job.get_tags_for_partition_key(key, selected_asset_keys=[SHARD_ASSET]))
            runs[f"shard-{key}"] = result.run_id
        runs["dedup"] = dg.execute_job(repository.get_reconstructable_job(DEDUP_JOB), instance).run_id
    with open(report_path, "w") as report:
        json.dump({"orchestrator_pid": os.getpid(), "runs": runs}, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
