"""Stage 7: the training manifest, a deterministic train / validation split of the clean dataset."""

import hashlib

import dagster as dg
import pandas as pd

from imgdedup_pipeline.assets.metadata import table_metadata
from imgdedup_pipeline.resources.output_store import OutputStoreResource

SPLIT_TRAIN, SPLIT_VALIDATION = "train", "validation"
MANIFEST_COLUMNS = ["path", "image_id", "pixel_hash", "width", "height", "split"]


class TrainingManifestConfig(dg.Config):
    """validation_fraction: share of the clean images put in the validation split, in [0, 1]."""

    validation_fraction: float = 0.1


def split_position(image_id: str) -> float:
    """Where an image falls in [0, 1): the first 64 bits of sha256(image_id), scaled.

    Depends only on the image id (a hash of the path), so an image keeps its split across runs
    and when other images are added or removed.
    """
    return int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "big") / 2.0**64


def assign_splits(clean: pd.DataFrame, validation_fraction: float) -> pd.DataFrame:
    """Split the clean dataset into train and validation.

    Args:
        clean: the clean dataset (columns path, image_id, pixel_hash, width, height).
        validation_fraction: in [0, 1]; images whose `split_position` is below it are validation.

    Returns:
        A new DataFrame with MANIFEST_COLUMNS sorted by path; `split` is `train` or `validation`.

    Raises:
        ValueError: validation_fraction outside [0, 1].
    """
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(
            f"validation_fraction must lie in [0, 1], got {validation_fraction}; set it in the training_manifest config"
        )
    manifest = clean.sort_values("path", ignore_index=True)[MANIFEST_COLUMNS[:-1]].copy()
    in_validation = manifest["image_id"].map(split_position) < validation_fraction
    manifest["split"] = in_validation.map({True: SPLIT_VALIDATION, False: SPLIT_TRAIN})
    return manifest


# In the dedup group so that the group's "Materialize all" in the UI runs the whole dedup_job.
@dg.asset(group_name="dedup")
def training_manifest(
    context: dg.AssetExecutionContext,
    config: TrainingManifestConfig,
    clean_dataset: pd.DataFrame,
    output_store: OutputStoreResource,
) -> dg.Output[pd.DataFrame]:
    """The images training may use, each assigned to the train or validation split."""
    manifest = assign_splits(clean_dataset, config.validation_fraction)
    counts = manifest["split"].value_counts().reindex([SPLIT_TRAIN, SPLIT_VALIDATION], fill_value=0)
    # Into the published set that clean_dataset made (none when the gate holds this asset back).
    manifest_csv = output_store.add_to_published_set("training_manifest.csv", manifest)
    context.log.info(f"training manifest: {counts[SPLIT_TRAIN]} train, {counts[SPLIT_VALIDATION]} validation images")
    return dg.Output(
        manifest,
        metadata=table_metadata(
            manifest,
            train_rows=int(counts[SPLIT_TRAIN]),
            validation_rows=int(counts[SPLIT_VALIDATION]),
            validation_fraction=config.validation_fraction,
            export=dg.MetadataValue.path(str(manifest_csv)),
        ),
    )
