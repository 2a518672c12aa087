"""The embedding stages' work without Dagster: load only the catalogued bytes of each file, embed
in batches and checkpoint each batch before the next (`image_embeddings`, `embedding_shards`)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd

from imgdedup_pipeline.core.checkpoints import EmbeddingCheckpoint
from imgdedup_pipeline.core.embedders import Embedder, embed_in_batches
from imgdedup_pipeline.core.images import FileChangedError
from imgdedup_pipeline.core.progress import progress_message, should_report


def verified_image_loader(raw_images: pd.DataFrame, load_verified_rgb: Callable) -> Callable:
    """load(path, draft) for `embed_in_batches` that decodes only bytes whose SHA-256 is the one
    catalogued with the file, so a vector is always computed from the pixels its hash names. When
    a file changed since the catalog, the other files with the same pixel hash are tried in path
    order; when none is unchanged, `FileChangedError` (from the last one tried) is raised.
    `load_verified_rgb(path, sha256, draft)` reads one file (`ImageStoreResource.load_verified_rgb`)."""
    rows = raw_images.sort_values("path")[["path", "pixel_hash", "file_sha256"]]
    hash_of_path = dict(zip(rows["path"], rows["pixel_hash"]))
    files_by_hash: dict[str, list[tuple[str, str]]] = {}
    for path, pixel_hash, sha in rows.itertuples(index=False):
        files_by_hash.setdefault(pixel_hash, []).append((path, sha))

    def load(path: str, draft):
        candidates = files_by_hash[hash_of_path[path]]
        for position, (candidate, sha) in enumerate(sorted(candidates, key=lambda c: c[0] != path)):
            try:
                return load_verified_rgb(candidate, sha, draft)
            except (FileChangedError, FileNotFoundError) as exc:
                if position == len(candidates) - 1:
                    raise (
                        exc
                        if isinstance(exc, FileChangedError)
                        else FileChangedError(f"{candidate}: the file disappeared since it was catalogued")
                    ) from exc

    return load


def embed_to_checkpoint(
    todo: dict[str, str],
    embedder: Embedder,
    batch_size: int,
    load_image: Callable,
    checkpoint: EmbeddingCheckpoint,
    log: Callable[[str], None],
    warn: Callable[[str], None],
    on_batch: Callable | None = None,
) -> tuple[int, float, dict[str, str]]:
    """Embed `todo` (pixel hash -> path) in batches, writing each batch to `checkpoint` before the
    next starts and telling `log` the progress (`warn`, the files left out); `on_batch(hashes, vectors)` sees each batch. Returns
    (contents embedded, seconds, {pixel hash: why} for contents whose files changed since the
    catalog and were left for the next run)."""
    started, done, last_reported = time.monotonic(), 0, None
    warmup: tuple[int, float] | None = None
    changed: dict[str, str] = {}

    def leave_for_next_run(pixel_hash: str, error: Exception) -> None:
        changed[pixel_hash] = str(error)
        warn(f"not embedded, left for the next run: {error} (its new content is catalogued and embedded then)")

    for hashes, vectors in embed_in_batches(todo, embedder, load_image, batch_size, on_changed=leave_for_next_run):
        checkpoint.write(hashes, vectors)
        if on_batch is not None:
            on_batch(hashes, vectors)
        done += len(hashes)
        # First batch, last batch, and at most one line every PROGRESS_INTERVAL_S in between.
        now = time.monotonic()
        # The first batch also loads (or exports) the model: the rate is taken after it.
        warmup = warmup or (done, now - started)
        if should_report(now, last_reported, done, len(todo)):
            log(progress_message(done, len(todo), now - started, warmup=warmup))
            last_reported = now
    return done, time.monotonic() - started, changed
