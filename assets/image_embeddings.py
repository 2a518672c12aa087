"""Stage 2: one embedding per distinct pixel hash that the vector table does not hold yet."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from assets.metadata import table_metadata
from core.catalog import path_per_content
from core.checkpoints import EmbeddingCheckpoint
from core.collections import CHANGED_COLUMN
from core.embedders import embed_in_batches
from core.images import FileChangedError
from core.progress import progress_message, should_report
from resources.embedding_model import EmbeddingModelResource
from resources.image_store import ImageStoreResource
from resources.lancedb import LanceDBResource
from resources.output_store import OutputStoreResource


def embedding_checkpoint(
    output_store: OutputStoreResource, lancedb: LanceDBResource, model_id: str, warn=None
) -> EmbeddingCheckpoint:
    """The model's checkpoints; `warn` (the step's log) names a damaged shard that is discarded."""
    directory = output_store.embedding_checkpoint_dir(lancedb.table_name(model_id))
    return EmbeddingCheckpoint(directory, warn) if warn is not None else EmbeddingCheckpoint(directory)


def verified_image_loader(raw_images: pd.DataFrame, image_store: ImageStoreResource):
    """load(path, draft) for `embed_in_batches` that decodes only bytes whose SHA-256 is the one
    catalogued with the file, so a vector is always computed from the pixels its hash names. When
    a file changed since the catalog, the other files with the same pixel hash are tried in path
    order; when none is unchanged, `FileChangedError` (from the last one tried) is raised."""
    rows = raw_images.sort_values("path")[["path", "pixel_hash", "file_sha256"]]
    hash_of_path = dict(zip(rows["path"], rows["pixel_hash"]))
    files_by_hash: dict[str, list[tuple[str, str]]] = {}
    for path, pixel_hash, sha in rows.itertuples(index=False):
        files_by_hash.setdefault(pixel_hash, []).append((path, sha))

    def load(path: str, draft):
        candidates = files_by_hash[hash_of_path[path]]
        for position, (candidate, sha) in enumerate(sorted(candidates, key=lambda c: c[0] != path)):
            try:
                return image_store.load_verified_rgb(candidate, sha, draft)
            except (FileChangedError, FileNotFoundError) as exc:
                if position == len(candidates) - 1:
                    raise (
                        exc
                        if isinstance(exc, FileChangedError)
                        else FileChangedError(f"{candidate}: the file disappeared since it was catalogued")
                    ) from exc

    return load


def embed_to_checkpoint(
    context,
    todo: dict[str, str],
    embedding_model: EmbeddingModelResource,
    load_image,
    checkpoint: EmbeddingCheckpoint,
    on_batch=None,
) -> tuple[int, float, dict[str, str]]:
    """Embed `todo` (pixel hash -> path) in batches, writing each batch to `checkpoint` before the
    next starts and logging progress; `on_batch(hashes, vectors)` sees each batch. Returns
    (contents embedded, seconds, {pixel hash: why} for contents whose files changed since the
    catalog and were left for the next run)."""
    embedder = embedding_model.get_embedder()
    started, done, last_reported = time.monotonic(), 0, None
    warmup: tuple[int, float] | None = None
    changed: dict[str, str] = {}

    def leave_for_next_run(pixel_hash: str, error: Exception) -> None:
        changed[pixel_hash] = str(error)
        context.log.warning(
            f"not embedded, left for the next run: {error} (its new content is catalogued and embedded then)"
        )

    for hashes, vectors in embed_in_batches(
        todo, embedder, load_image, embedding_model.batch_size, on_changed=leave_for_next_run
    ):
        checkpoint.write(hashes, vectors)
        if on_batch is not None:
            on_batch(hashes, vectors)
        done += len(hashes)
        # First batch, last batch, and at most one line every PROGRESS_INTERVAL_S in between.
        now = time.monotonic()
        # The first batch also loads (or exports) the model: the rate is taken after it.
        warmup = warmup or (done, now - started)
        if should_report(now, last_reported, done, len(todo)):
            context.log.info(progress_message(done, len(todo), now - started, warmup=warmup))
            last_reported = now
    return done, time.monotonic() - started, changed


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

    done, elapsed, changed = embed_to_checkpoint(
        context,
        todo,
        embedding_model,
        verified_image_loader(raw_images, image_store),
        checkpoint,
        on_batch=lambda hashes, vectors: resumed.update(zip(hashes, vectors)),
    )

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
            embedded_this_run=done,
            changed_during_run=len(changed),
            reused_from_vector_table=len(stored & path_by_hash.keys()),
            dimensions=int(next(iter(resumed.values())).shape[0]) if resumed else 0,
            images_per_second=round(done / elapsed, 2) if done and elapsed > 0 else 0.0,
        ),
    )
