"""The embedding stages' work without Dagster: load only the catalogued bytes of each file, embed
in batches and checkpoint each batch before the next (`image_embeddings`, `embedding_shards`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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


class RunLog(Protocol):
    """Where the embedding stages report (a Dagster `context.log` or a `logging.Logger`)."""

    def info(self, msg: str) -> object: ...

    def warning(self, msg: str) -> object: ...


@dataclass(frozen=True)
class EmbeddedContents:
    """What `embed_to_checkpoint` did.

    Attributes:
        count: contents embedded and checkpointed.
        seconds: wall time, the model's loading included.
        changed: {pixel hash: why} for contents whose files all changed since the catalog, left
            for the next run.
    """

    count: int
    seconds: float
    changed: dict[str, str]

    @property
    def images_per_second(self) -> float:
        return round(self.count / self.seconds, 2) if self.count and self.seconds > 0 else 0.0


def embed_to_checkpoint(
    todo: dict[str, str],
    raw_images: pd.DataFrame,
    embedder: Embedder,
    batch_size: int,
    load_verified_rgb: Callable,
    checkpoint: EmbeddingCheckpoint,
    log: RunLog,
    on_batch: Callable | None = None,
) -> EmbeddedContents:
    """Embed `todo` (pixel hash -> path) in batches from the catalogued bytes only
    (`verified_image_loader` over `raw_images` and `load_verified_rgb`), writing each batch to
    `checkpoint` before the next starts and telling `log` the progress and the files left out;
    `on_batch(hashes, vectors)` sees each batch."""
    started, done, last_reported = time.monotonic(), 0, None
    warmup: tuple[int, float] | None = None
    changed: dict[str, str] = {}

    def leave_for_next_run(pixel_hash: str, error: Exception) -> None:
        changed[pixel_hash] = str(error)
        log.warning(f"not embedded, left for the next run: {error} (its new content is catalogued and embedded then)")

    load_image = verified_image_loader(raw_images, load_verified_rgb)
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
            log.info(progress_message(done, len(todo), now - started, warmup=warmup))
            last_reported = now
    return EmbeddedContents(done, time.monotonic() - started, changed)
