"""Stage 6: the clean dataset, what training may use."""

import dagster as dg
import pandas as pd

from imgdedup_pipeline.assets.metadata import table_metadata
from imgdedup_pipeline.core.collections import CHANGED_REASON, accounting, clean_table, withdraw_changed_contents
from imgdedup_pipeline.resources.output_store import OutputStoreResource


@dg.asset(group_name="dedup")
def clean_dataset(
    context: dg.AssetExecutionContext,
    raw_images: pd.DataFrame,
    rejected_images: pd.DataFrame,
    duplicate_groups: pd.DataFrame,
    duplicates_collection: pd.DataFrame,
    image_vectors: dict,
    output_store: OutputStoreResource,
) -> dg.Output[pd.DataFrame]:
    """Manifest of kept images: discovered minus duplicates minus rejected files."""
    changed = image_vectors.get("changed_during_run", {})
    raw_images, rejected_images = withdraw_changed_contents(raw_images, rejected_images, changed)
    if changed:
        # Into this run's export set, replacing raw_images' copy: published with the rest below.
        output_store.write_table("rejected.csv", rejected_images[["path", "reason", "detail"]], run_id=context.run_id)
        context.log.warning(
            f"{int((rejected_images['reason'] == CHANGED_REASON).sum())} files changed during the run: rejected as {CHANGED_REASON} (see rejected.csv); the next run catalogues and embeds their new content"
        )
    clean = clean_table(raw_images, duplicate_groups)
    books = accounting(
        len(raw_images) + len(rejected_images), len(clean), len(duplicates_collection), len(rejected_images)
    )
    columns = ["path", "image_id", "pixel_hash", "file_sha256", "width", "height", "bytes"]
    output_store.write_table("clean.csv", clean[columns], run_id=context.run_id)
    output_store.write_table("clean.parquet", clean[columns], run_id=context.run_id)
    # The last file of the set: every top-level export now switches to this run's, at once.
    output_store.publish_exports(context.run_id)
    manifest_csv = output_store.root / "clean.csv"
    return dg.Output(
        clean,
        metadata=table_metadata(
            clean[columns], accounting=dg.MetadataValue.json(books), export=dg.MetadataValue.path(str(manifest_csv))
        ),
    )
