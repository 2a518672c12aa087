"""The single `Definitions` object: assets, checks, resources and the job, for one deployment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from imgdedup_pipeline.assets.calibration import embedding_thresholds
from imgdedup_pipeline.assets.clean_dataset import clean_dataset
from imgdedup_pipeline.assets.duplicates_collection import collect_duplicates
from imgdedup_pipeline.assets.embedding_shards import image_embedding_shards
from imgdedup_pipeline.assets.image_embeddings import image_embeddings
from imgdedup_pipeline.assets.image_vectors import image_vectors
from imgdedup_pipeline.assets.raw_images import discover_raw_images
from imgdedup_pipeline.assets.training_manifest import training_manifest
from imgdedup_pipeline.assets.uniqueness_scores import score_uniqueness
from imgdedup_pipeline.automation.arrivals import build_arrival_automation
from imgdedup_pipeline.automation.maintenance import vector_table_maintenance, weekly_vector_table_maintenance
from imgdedup_pipeline.checks import all_checks
from imgdedup_pipeline.core.embedders import build_embedder
from imgdedup_pipeline.core.settings import FIELDS as SETTINGS_FIELDS
from imgdedup_pipeline.core.settings import Settings, SettingsError
from imgdedup_pipeline.resources.embedding_model import EmbeddingModelResource
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.lancedb import LanceDBResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource
from imgdedup_pipeline.resources.policy import DedupPolicyResource

DEDUP_JOB = "dedup_job"
CALIBRATION_JOB = "calibration_job"
SHARDED_EMBEDDING_JOB = "sharded_embedding_job"
ALL_ASSETS = [
    discover_raw_images,
    image_embeddings,
    image_vectors,
    score_uniqueness,
    collect_duplicates,
    clean_dataset,
    training_manifest,
]
# Run on demand, not by dedup_job: scoring reads the stored value, so calibrating never slows a run.
CALIBRATION_ASSETS = [embedding_thresholds]
# Run on demand before dedup_job when one machine embeds too slowly: one partition per hash shard,
# run in parallel, each writing embedding checkpoints that dedup_job then inserts.
SHARDED_ASSETS = [image_embedding_shards]


def model_id_for(settings: Settings) -> str | None:
    """The id of the model `settings` configure (no weights are loaded), or None when that embedder cannot be built."""
    try:
        return build_embedder(
            settings.embedder,
            settings.model,
            device=settings.device,
            pooling=settings.pooling,
            precision=settings.precision,
            offline_pooling=settings.offline_pooling,
        ).model_id
    except ValueError:
        return None


def multi_or_in_process_executor_defaulting_to(mode: str) -> dg.ExecutorDefinition:
    """Dagster's default executor (`in_process` or `multiprocess` in the run config) with `mode`
    when the run config names neither, so launchpad configs written for either keep working."""
    creation_fn = dg.multi_or_in_process_executor.executor_creation_fn
    if creation_fn is None:
        raise RuntimeError("dagster's multi_or_in_process_executor has no executor_creation_fn")
    return dg.executor(
        name=f"{mode}_by_default",
        config_schema=dg.Field(
            dg.multi_or_in_process_executor.config_schema.as_field().config_type, default_value={mode: {}}
        ),
        requirements=dg.multi_or_in_process_executor.get_requirements,
    )(creation_fn)


# In-process by default: a process per step would import torch, transformers and GX again for each
# of the graph's ~8 steps.
IN_PROCESS_BY_DEFAULT_EXECUTOR = multi_or_in_process_executor_defaulting_to("in_process")


def executor_for(settings: Settings) -> dg.ExecutorDefinition:
    """The executor of every job, chosen by `settings.executor` (IMGDEDUP_EXECUTOR) here only.

    Raises:
        SettingsError: the executor is unknown, or Celery lacks its package or its broker URL.
    """
    if problems := settings.executor_problems():
        raise SettingsError(problems[0])
    if settings.executor == "in_process":
        return IN_PROCESS_BY_DEFAULT_EXECUTOR
    if settings.executor == "multiprocess":
        return multi_or_in_process_executor_defaulting_to("multiprocess")
    from dagster_celery import celery_executor

    # The workers read the same two URLs from deploy/celery.yaml.
    urls = {"broker": settings.celery_broker_url, "backend": settings.celery_backend_url}
    return celery_executor.configured({key: url for key, url in urls.items() if url}, name="celery")


def shared_settings(settings: Settings, resource: type[dg.ConfigurableResource]) -> dict:
    """The settings a resource takes under the same field names (its fields defined by `setting()`)."""
    return {name: getattr(settings, name) for name in resource.model_fields if name in SETTINGS_FIELDS}


def resources_for(settings: Settings) -> dict:
    """The resources of one deployment, all built from one `Settings`: the fields a resource shares
    with `Settings` by name, plus what is derived from them."""
    return {
        # --out (exports, state and the default vector store) may lie under --images: never read as input.
        "image_store": ImageStoreResource(
            **shared_settings(settings, ImageStoreResource), excluded_folders=[settings.out_dir]
        ),
        "embedding_model": EmbeddingModelResource(
            **shared_settings(settings, EmbeddingModelResource),
            backend=settings.embedder,
            export_dir=settings.export_dir,
        ),
        "lancedb": LanceDBResource(uri=settings.vector_store_uri),
        "output_store": OutputStoreResource(
            out_dir=settings.out_dir,
            report_base_url=settings.report_base_url or "",
            shared_storage_uri=settings.shared_storage_uri,
        ),
        # No model id here: the assets look calibrations up under the id of the vectors they read,
        # so a launchpad change to the embedding model (pooling, precision, ...) needs nothing else.
        "policy": DedupPolicyResource(
            **shared_settings(settings, DedupPolicyResource), thresholds_file=settings.thresholds_file
        ),
        "io_manager": io_manager_for(settings),
    }


def io_manager_for(settings: Settings) -> dg.ConfigurableIOManagerFactory | dg.ConfigurableIOManager:
    """Where the intermediate tables are pickled: under the output folder's state, beside the
    vector table, or on the shared storage (`shared_storage_uri`) when steps run on machines that
    share no disk.

    Raises:
        SettingsError: shared storage is set but dagster-aws is not installed.
    """
    if not settings.shared_storage_uri:
        return dg.FilesystemIOManager(base_dir=str(Path(settings.out_dir) / "state" / "assets"))
    if problems := settings.shared_storage_problems():
        raise SettingsError(problems[0])
    from dagster_aws.s3 import S3PickleIOManager, S3Resource

    from imgdedup_pipeline.core.object_store import split_uri

    bucket, prefix = split_uri(settings.shared_storage_uri)
    # Credentials, region and endpoint from the AWS_* variables, as for LanceDB; one PUT per object.
    return S3PickleIOManager(
        s3_resource=S3Resource(), s3_bucket=bucket, s3_prefix="/".join(p for p in (prefix, "state", "assets") if p)
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    dedup_job = dg.define_asset_job(
        DEDUP_JOB,
        selection=dg.AssetSelection.assets(*ALL_ASSETS),
        description="Materialize the whole dedup graph and run its checks.",
    )
    calibration_job = dg.define_asset_job(
        CALIBRATION_JOB,
        selection=dg.AssetSelection.assets(discover_raw_images, image_embeddings, image_vectors, *CALIBRATION_ASSETS),
        description="Discover and embed the images (a later run reuses the vectors), then calibrate the near-duplicate threshold for the model.",
    )
    sharded_embedding_job = dg.define_asset_job(
        SHARDED_EMBEDDING_JOB,
        selection=dg.AssetSelection.assets(*SHARDED_ASSETS),
        description="Embed one shard of the new contents (partition = first hex digit of the pixel hash) into the embedding checkpoints; run the partitions in parallel, then dedup_job.",
    )
    arrival_sensor, nightly_schedule = build_arrival_automation(DEDUP_JOB, settings.dedup_schedule_cron)
    return dg.Definitions(
        assets=[*ALL_ASSETS, *CALIBRATION_ASSETS, *SHARDED_ASSETS],
        asset_checks=all_checks(),
        jobs=[dedup_job, calibration_job, sharded_embedding_job, vector_table_maintenance],
        sensors=[arrival_sensor],
        schedules=[nightly_schedule, weekly_vector_table_maintenance],
        resources=resources_for(settings),
        executor=executor_for(settings),
    )


defs = build_definitions(Settings.from_env())
