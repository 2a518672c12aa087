"""Stage 2: one embedding per distinct pixel hash that the vector table does not hold yet."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from assets.metadata import table_metadata
from core.checkpoints import EmbeddingCheckpoint
from core.embedders import embed_in_batches
from core.progress import progress_message, should_report
from resources.embedding_model import EmbeddingModelResource
from resources.image_store import ImageStoreResource
from resources.lancedb import LanceDBResource
from resources.output_store import OutputStoreResource


def embedding_checkpoint(output_store: OutputStoreResource, lancedb: LanceDBResource, model_id: str, warn=None) -> EmbeddingCheckpoint:
    """The model's checkpoints; `warn` (the step's log) names a damaged shard that is discarded."""
    directory = output_store.state_dir / "embedding-checkpoints" / lancedb.table_name(model_id)
    return EmbeddingCheckpoint(directory, warn) if warn is not None else EmbeddingCheckpoint(directory)


def path_per_content(raw_images: pd.DataFrame) -> dict[str, str]:
    """pixel hash -> the file embedded for it (the first path), so every stage embeds the same pixels."""
    return raw_images.sort_values("path").drop_duplicates("pixel_hash").set_index("pixel_hash")["path"].to_dict()


def embed_to_checkpoint(
    context, todo: dict[str, str], embedding_model: EmbeddingModelResource, image_store: ImageStoreResource, checkpoint: EmbeddingCheckpoint, on_batch=None
) -> tuple[int, float]:
    """Embed `todo` (pixel hash -> path) in batches, writing each batch to `checkpoint` before the
    next starts and logging progress; `on_batch(hashes, vectors)` sees each batch. Returns
    (contents embedded, seconds)."""
    embedder = embedding_model.get_embedder()
    started, done, last_reported = time.monotonic(), 0, None
    for hashes, vectors in embed_in_batches(todo, embedder, lambda path, draft: image_store.load_rgb(path, draft), embedding_model.batch_size):
        checkpoint.write(hashes, vectors)
        if on_batch is not None:
            on_batch(hashes, vectors)
        done += len(hashes)
        # First batch, last batch, and at most one line every PROGRESS_INTERVAL_S in between.
        now = time.monotonic()
        if should_report(now, last_reported, done, len(todo)):
            context.log.info(progress_message(done, len(todo), now - started))
            last_reported = now
    return done, time.monotonic() - started


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
    checkpoint = embedding_checkpoint(output_store, lancedb, model_id, warn=context.log.warning)
    resumed = {h: v for h, v in checkpoint.load().items() if h in path_by_hash and h not in stored}
    todo = {h: p for h, p in path_by_hash.items() if h not in stored and h not in resumed}
    context.log.info(
        f"model {model_id}: {len(path_by_hash)} distinct contents, {len(stored & path_by_hash.keys())} already in the "
        f"vector table, {len(resumed)} resumed from checkpoints, {len(todo)} to embed"
    )

    done, elapsed = embed_to_checkpoint(context, todo, embedding_model, image_store, checkpoint, on_batch=lambda hashes, vectors: resumed.update(zip(hashes, vectors)))

    hashes = sorted(resumed)
    embeddings = pd.DataFrame({"pixel_hash": hashes, "model_id": model_id, "vector": [np.asarray(resumed[h], np.float32) for h in hashes]})
    return dg.Output(
        embeddings,
        metadata=table_metadata(
            embeddings,
            model_id=model_id,
            embedded_this_run=done,
            reused_from_vector_table=len(stored & path_by_hash.keys()),
            dimensions=int(embeddings["vector"].iloc[0].shape[0]) if len(embeddings) else 0,
            images_per_second=round(done / elapsed, 2) if done and elapsed > 0 else 0.0,
        ),
    )
