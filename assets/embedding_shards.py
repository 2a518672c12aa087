"""Stage 2 split over machines: the embeddings of one shard of the contents, as checkpoints.

`image_embedding_shards` has one partition per first hex digit of the pixel hash. Each partition
embeds its shard's new contents with the same model and batching as `image_embeddings` and writes
them to the per-model embedding checkpoints; the next `dedup_job` run finds them there, embeds
nothing, and `image_vectors` (the one LanceDB writer) inserts them.
"""

import dagster as dg
import pandas as pd

from imgdedup_pipeline.core.catalog import path_per_content
from imgdedup_pipeline.core.embedding_batches import embed_to_checkpoint
from imgdedup_pipeline.core.sharding import SHARD_KEYS, in_shard
from imgdedup_pipeline.resources.embedding_model import EmbeddingModelResource
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.lancedb import LanceDBResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource

EMBEDDING_SHARDS = dg.StaticPartitionsDefinition(list(SHARD_KEYS))


@dg.asset(
    # A group of its own: "Materialize all" on the dedup group stays one unpartitioned run.
    group_name="sharded_embedding",
    # No backfill policy on purpose: a backfill then launches one run per shard (the shard is read
    # from the partition key), and separate runs are what the run launcher spreads over machines.
    partitions_def=EMBEDDING_SHARDS,
)
def image_embedding_shards(
    context: dg.AssetExecutionContext,
    raw_images: pd.DataFrame,
    image_store: ImageStoreResource,
    embedding_model: EmbeddingModelResource,
    lancedb: LanceDBResource,
    output_store: OutputStoreResource,
) -> dg.MaterializeResult:
    """Embeddings of the new contents whose pixel hash starts with the partition key, written to
    the model's embedding checkpoints for `image_embeddings` (never to the vector table)."""
    shard = context.partition_key
    embedder = embedding_model.get_embedder()
    model_id = embedder.model_id
    path_by_hash = in_shard(path_per_content(raw_images), shard)
    checkpoint = output_store.embedding_checkpoint(lancedb.table_name(model_id))
    # A shard run that was killed (or ran before) resumes: finished batches are not embedded again.
    # Checkpoints are listed before the table is read: a batch `image_vectors` inserts and clears
    # in between is then in the table, not lost between the two.
    checkpointed = checkpoint.hashes() & path_by_hash.keys()
    stored = lancedb.stored_hashes(model_id) & path_by_hash.keys()
    checkpointed -= stored
    todo = {h: p for h, p in path_by_hash.items() if h not in stored and h not in checkpointed}
    context.log.info(
        f"shard {shard}, model {model_id}: {len(path_by_hash)} distinct contents in the shard, {len(stored)} already in "
        f"the vector table, {len(checkpointed)} already checkpointed, {len(todo)} to embed"
    )

    # Each batch is its own uniquely named file, renamed into place: shards running at the same
    # time never write the same file, and a killed shard leaves only complete batches.
    # A file changed since the catalog is skipped (logged); dedup_job accounts for it.
    embedded = embed_to_checkpoint(
        todo, raw_images, embedder, embedding_model.batch_size, image_store.load_verified_rgb, checkpoint, context.log
    )
    return dg.MaterializeResult(
        metadata={
            "shard": shard,
            "model_id": model_id,
            "runtime": embedder.runtime_in_use,
            "contents_in_shard": len(path_by_hash),
            "embedded_this_run": embedded.count,
            "changed_during_run": len(embedded.changed),
            "skipped_in_vector_table": len(stored),
            "skipped_already_checkpointed": len(checkpointed),
            "checkpoint_dir": dg.MetadataValue.path(checkpoint.location),
            "images_per_second": embedded.images_per_second,
        }
    )
