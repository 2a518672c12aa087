"""Stage 3: the LanceDB vector table (store of record), one table per model."""

from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from imgdedup_pipeline.core.collections import CHANGED_COLUMN
from imgdedup_pipeline.resources.embedding_model import EmbeddingModelResource
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.lancedb import WRITER_POOL, LanceDBResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource


@dg.asset(group_name="dedup", pool=WRITER_POOL)
def image_vectors(
    context: dg.AssetExecutionContext,
    image_embeddings: pd.DataFrame,
    embedding_model: EmbeddingModelResource,
    lancedb: LanceDBResource,
    output_store: OutputStoreResource,
    image_store: ImageStoreResource,
) -> dg.Output[dict]:
    """The LanceDB table holding one vector per pixel hash for the configured model."""
    model_id = embedding_model.get_embedder().model_id
    if len(image_embeddings) and set(image_embeddings["model_id"]) != {model_id}:
        raise ValueError(
            f"embeddings are from {set(image_embeddings['model_id'])}, but the configured model is {model_id}; rematerialize image_embeddings"
        )
    changed = (
        image_embeddings[image_embeddings[CHANGED_COLUMN].notna()]
        if CHANGED_COLUMN in image_embeddings
        else image_embeddings.iloc[:0]
    )
    image_embeddings = image_embeddings.drop(index=changed.index)
    if len(image_embeddings):
        table, inserted = lancedb.insert_missing(
            model_id, image_embeddings["pixel_hash"].tolist(), np.stack(image_embeddings["vector"].to_numpy())
        )
    else:
        table, inserted = lancedb.open_vectors(model_id), 0
    # The vectors are now durable in LanceDB, so the per-batch checkpoints can go.
    output_store.embedding_checkpoint(lancedb.table_name(model_id)).clear()
    summary = {
        "uri": lancedb.uri,
        "table": lancedb.table_name(model_id),
        "model_id": model_id,
        "version": int(table.version) if table is not None else 0,
        "rows": int(table.count_rows()) if table is not None else 0,
    }
    # `imgdedup similar` finds the table and the image catalog of the last run through this file.
    # Contents that have no vector because their files changed during the run: later stages
    # account for those files as rejected (`withdraw_changed_contents`).
    summary["changed_during_run"] = dict(zip(changed["pixel_hash"], changed[CHANGED_COLUMN]))
    output_store.write_json(
        "state/vectors.json",
        {**summary, "catalog": output_store.catalog_name(image_store.root), "image_root": str(image_store.root)},
    )
    context.log.info(
        f"inserted {inserted} vectors into {summary['table']} (version {summary['version']}, {summary['rows']} rows)"
    )
    metadata: dict[str, Any] = {  # the summary's values are plain JSON
        "dagster/row_count": summary["rows"],
        "lancedb/table_version": summary["version"],
        "lancedb/table": summary["table"],
        "lancedb/uri": dg.MetadataValue.path(lancedb.uri),
        "model_id": model_id,
        "inserted_this_run": inserted,
        "changed_during_run": len(changed),
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn("pixel_hash", "string"),
                dg.TableColumn("model_id", "string"),
                dg.TableColumn("vector", "fixed_size_list<float32>"),
            ]
        ),
    }
    return dg.Output(summary, metadata=metadata)
