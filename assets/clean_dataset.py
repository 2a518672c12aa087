"""Stage 6: the clean dataset, what training may use."""

import dagster as dg
import pandas as pd

from assets.metadata import table_metadata
from core.collections import accounting, clean_table
from resources.output_store import OutputStoreResource


@dg.asset(group_name="dedup")
def clean_dataset(
    context: dg.AssetExecutionContext,
    raw_images: pd.DataFrame,
    rejected_images: pd.DataFrame,
    duplicate_groups: pd.DataFrame,
    duplicates_collection: pd.DataFrame,
    output_store: OutputStoreResource,
) -> dg.Output[pd.DataFrame]:
    """Manifest of kept images: discovered minus duplicates minus rejected files."""
    clean = clean_table(raw_images, duplicate_groups)
    books = accounting(len(raw_images) + len(rejected_images), len(clean), len(duplicates_collection), len(rejected_images))
    columns = ["path", "image_id", "pixel_hash", "file_sha256", "width", "height", "bytes"]
    output_store.write_table("clean.csv", clean[columns], run_id=context.run_id)
    output_store.write_table("clean.parquet", clean[columns], run_id=context.run_id)
    # The last file of the set: every top-level export now switches to this run's, at once.
    output_store.publish_exports(context.run_id)
    manifest_csv = output_store.root / "clean.csv"
    return dg.Output(
        clean,
        metadata=table_metadata(clean[columns], accounting=dg.MetadataValue.json(books), export=dg.MetadataValue.path(str(manifest_csv))),
    )
