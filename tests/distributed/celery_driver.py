"""The orchestrator of tests/distributed/test_celery.py, in a process of its own so that
definitions.py reads the test's IMGDEDUP_* settings (IMGDEDUP_EXECUTOR=celery) from a clean
environment. Every step of these runs is sent to the Celery workers.

Usage (from the repo root, DAGSTER_HOME on the Postgres instance):
    python tests/distributed/celery_driver.py REPORT.json [catalog] [shard:K | shard:all] [dedup]
`shard:all` runs the 16 embedding shards, one run each, one after the other (launching them from
several threads at once hung). Writes each run's id and status, and this process's PID.
"""

import json
import os
import sys

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

from imgdedup_pipeline.core.sharding import SHARD_KEYS
from imgdedup_pipeline.definitions import DEDUP_JOB, SHARDED_EMBEDDING_JOB, defs

SHARD_ASSET = dg.AssetKey("image_embedding_shards")
CATALOG_ASSETS = [dg.AssetKey("raw_images"), dg.AssetKey("rejected_images")]


def main(report_path: str, stages: list[str]) -> int:
    repository = ReconstructableRepository.for_module(
        "imgdedup_pipeline.definitions", "defs", working_directory=os.getcwd()
    )
    shard_job = defs.resolve_job_def(SHARDED_EMBEDDING_JOB)
    runs: dict[str, dict] = {}
    with dg.DagsterInstance.get() as instance:
        for stage in stages:
            if stage == "catalog":
                results = {
                    "catalog": dg.execute_job(
                        repository.get_reconstructable_job(DEDUP_JOB), instance, asset_selection=CATALOG_ASSETS
                    )
                }
            elif stage == "dedup":
                results = {"dedup": dg.execute_job(repository.get_reconstructable_job(DEDUP_JOB), instance)}
            else:
                wanted = stage.removeprefix("shard:")
                results = {
                    f"shard-{key}": dg.execute_job(
                        repository.get_reconstructable_job(SHARDED_EMBEDDING_JOB),
                        instance,
                        tags=shard_job.get_tags_for_partition_key(key, selected_asset_keys=[SHARD_ASSET]),
                    )
                    for key in (SHARD_KEYS if wanted == "all" else [wanted])
                }
            runs.update(
                {name: {"run_id": result.run_id, "success": result.success} for name, result in results.items()}
            )
    with open(report_path, "w") as report:
        json.dump({"orchestrator_pid": os.getpid(), "runs": runs}, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:] or ["catalog", "shard:all", "dedup"]))
