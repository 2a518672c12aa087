"""The one `Definitions` object loads, and its graph is the one the README describes (what
`dg check defs` would do for a package-shaped project)."""

import dagster as dg

from imgdedup_pipeline import definitions
from imgdedup_pipeline.definitions import CALIBRATION_JOB, DEDUP_JOB

DEDUP_ASSETS = {
    "raw_images",
    "rejected_images",
    "image_embeddings",
    "image_vectors",
    "uniqueness_scores",
    "near_duplicate_pairs",
    "duplicate_groups",
    "duplicates_collection",
    "clean_dataset",
    "training_manifest",
}


def test_definitions_load():
    dg.Definitions.validate_loadable(definitions.defs)


def test_the_dedup_group_is_the_whole_chain_up_to_the_training_manifest():
    graph = definitions.defs.resolve_asset_graph()
    in_group = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).group_name == "dedup"}
    assert in_group == DEDUP_ASSETS
    job_assets = {
        key.to_user_string() for key in definitions.defs.resolve_job_def(DEDUP_JOB).asset_layer.selected_asset_keys
    }
    assert job_assets == DEDUP_ASSETS


def test_every_check_blocks_what_depends_on_its_asset():
    graph = definitions.defs.resolve_asset_graph()
    checks = {key: graph.get_check_spec(key) for key in graph.asset_check_keys}
    assert {key.asset_key.to_user_string() for key in checks} == {"uniqueness_scores", "clean_dataset"}
    assert all(spec.blocking for spec in checks.values())


def test_every_job_resolves():
    for name in (DEDUP_JOB, CALIBRATION_JOB):
        assert definitions.defs.resolve_job_def(name).name == name


def test_the_io_manager_is_the_local_folder_unless_shared_storage_is_set(tmp_path):
    from dagster_aws.s3 import S3PickleIOManager

    from imgdedup_pipeline.core.settings import Settings

    local = definitions.io_manager_for(Settings(out_dir=str(tmp_path)))
    assert isinstance(local, dg.FilesystemIOManager) and local.base_dir == str(tmp_path / "state" / "assets")
    shared = definitions.io_manager_for(Settings(out_dir=str(tmp_path), shared_storage_uri="s3://team-bucket/imgdedup"))
    assert isinstance(shared, S3PickleIOManager)
    assert (shared.s3_bucket, shared.s3_prefix) == ("team-bucket", "imgdedup/state/assets")
    at_bucket_root = definitions.io_manager_for(Settings(out_dir=str(tmp_path), shared_storage_uri="s3://team-bucket"))
    assert at_bucket_root.s3_prefix == "state/assets"
