"""Stage 2: one embedding per distinct pixel hash that the vector table does not hold yet."""

import dagster as dg
import numpy as np
import pandas as pd

from imgdedup_pipeline.assets.metadata import table_metadata
from imgdedup_pipeline.core.catalog import path_per_content
from imgdedup_pipeline.core.collections import CHANGED_COLUMN
from imgdedup_pipeline.core.embedding_batches import embed_to_checkpoint
from imgdedup_pipeline.resources.embedding_model import EmbeddingModelResource
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.lancedb import LanceDBResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource


@dg.asset(group_name="dedup")
def image_embeddings(
    context: dg.AssetExecutionContext,
    raw_images: pd.DataFrame,
    image_store: ImageStoreResource,
    embedding_model: EmbeddingModelResource,
    lancedb: LanceDBResource,
    output_store: OutputStoreResource,
) -> dg.Output[pd.DataFrame]:
    """Embeddings (L2-normalised) computed in this run, one per new pixel hash, with the model id."""
    embedder = embedding_model.get_embedder()
    model_id = embedder.model_id
    path_by_hash = path_per_content(raw_images)
    stored = lancedb.stored_hashes(model_id)
    other_tables = sorted(set(lancedb.connect().table_names()) - {lancedb.table_name(model_id)})
    if not stored and other_tables:
        # A new model id never reuses another model's vectors: everything is embedded again.
        context.log.warning(
            f"model changed to {model_id}: no vectors for it yet, so every image is embedded into its own table "
            f"{lancedb.table_name(model_id)}; the other models' tables ({', '.join(other_tables)}) are kept and not mixed in"
        )
    checkpoint = output_store.embedding_checkpoint(lancedb.table_name(model_id), warn=context.log.warning)
    resumed = {h: v for h, v in checkpoint.load().items() if h in path_by_hash and h not in stored}
    todo = {h: p for h, p in path_by_hash.items() if h not in stored and h not in resumed}
    context.log.info(
        f"model {model_id}: {len(path_by_hash)} distinct contents, {len(stored & path_by_hash.keys())} already in the "
        f"vector table, {len(resumed)} resumed from checkpoints, {len(todo)} to embed"
    )

    embedded = embed_to_checkpoint(
        todo,
        raw_images,
        embedder,
        embedding_model.batch_size,
        image_store.load_verified_rgb,
        checkpoint,
        context.log,
        on_batch=lambda hashes, vectors: resumed.update(zip(hashes, vectors)),
    )
    changed = embedded.changed

    hashes = sorted(resumed)
    embeddings = pd.DataFrame(
        {
            "pixel_hash": hashes,
            "model_id": model_id,
            "vector": [np.asarray(resumed[h], np.float32) for h in hashes],
            CHANGED_COLUMN: None,
        }
    )
    if changed:
        # One row per content whose files all changed since the catalog, without a vector: the
        # later stages account for those files as rejected (`changed_during_run`) in this run.
        withdrawn = pd.DataFrame(
            {
                "pixel_hash": sorted(changed),
                "model_id": model_id,
                "vector": None,
                CHANGED_COLUMN: [changed[h] for h in sorted(changed)],
            }
        )
        embeddings = pd.concat([embeddings, withdrawn], ignore_index=True)
    return dg.Output(
        embeddings,
        metadata=table_metadata(
            embeddings,
            model_id=model_id,
            # Which inference runtime computed this run's vectors (the model id does not depend on it).
            runtime=embedder.runtime_in_use,
            embedded_this_run=embedded.count,
            changed_during_run=len(changed),
            reused_from_vector_table=len(stored & path_by_hash.keys()),
            dimensions=int(next(iter(resumed.values())).shape[0]) if resumed else 0,
            images_per_second=embedded.images_per_second,
        ),
    )
