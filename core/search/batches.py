"""Vectors read from record batches (e.g. streamed out of LanceDB, the store of record) into one
L2-normalised float32 array, the only full copy an indexed search holds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import numpy as np

from imgdedup_pipeline.core.search.result import l2_normalize


def read_batches(
    batches: Iterable[tuple[object, np.ndarray]], rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (keys, vectors) batches into (keys, float32 L2-normalised (N, D) vectors).

    With `rows`, the array is allocated once and filled batch by batch (peak: the array plus one
    batch); more rows than announced is an error.
    """
    keys: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    vectors = None
    filled = 0
    unreleased = 0
    for batch_keys, batch_vectors in batches:
        batch = np.asarray(batch_vectors, dtype=np.float32)
        if batch.ndim != 2:
            raise ValueError(f"a batch of vectors must be 2-D (rows, dim), got shape {batch.shape}")
        batch_keys = np.asarray(batch_keys, dtype=object)
        if len(batch_keys) != len(batch):
            raise ValueError(f"a batch has {len(batch_keys)} keys for {len(batch)} vectors")
        keys.append(batch_keys)
        if rows is None:
            parts.append(l2_normalize(batch))
            continue
        if vectors is None:
            vectors = np.empty((rows, batch.shape[1]), dtype=np.float32)
        if filled + len(batch) > rows:
            raise ValueError(f"the batches hold more than the {rows} rows announced")
        vectors[filled : filled + len(batch)] = l2_normalize(batch)
        filled += len(batch)
        unreleased += batch.nbytes
        if unreleased >= 64 << 20:
            # The reader's freed batch buffers stay in the C heap's per-thread arenas (LanceDB's
            # Rust threads); hand them back so that they do not add to the array's footprint.
            release_free_heap()
            unreleased = 0
    release_free_heap()
    all_keys = np.concatenate(keys) if keys else np.empty(0, dtype=object)
    if rows is None:
        vectors = np.concatenate(parts) if parts else np.empty((0, 0), np.float32)
    elif vectors is None:
        vectors = np.empty((0, 0), np.float32)
    else:
        vectors = vectors[:filled]
    return all_keys, vectors


def lancedb_batches(
    table, key_column: str = "pixel_hash", vector_column: str = "vector", batch_rows: int = 8_192
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream (keys, float32 vectors) batches out of a LanceDB table, in table order.

    Reads `batch_rows` rows per query (offset / limit): at 1M x 768 rows this peaked ~800 MiB
    lower than one streamed scan (`to_batches`), whose read-ahead buffers stay resident. The table must
    not change while it is read (rows are addressed by offset in the current version).

    Args:
        table: a LanceDB table (`lancedb.table.Table`).
        key_column / vector_column: the key column and the fixed-size-list vector column.
        batch_rows: rows per batch.
    """
    total = table.count_rows()
    for start in range(0, total, batch_rows):
        batch = (
            table.search()
            .select([key_column, vector_column])
            .offset(start)
            .limit(min(batch_rows, total - start))
            .to_arrow()
        )
        column = batch.column(vector_column).combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False).reshape(len(batch), column.type.list_size)
        keys = np.asarray(batch.column(key_column).to_pylist(), dtype=object)
        del batch, column
        yield keys, values


def release_free_heap() -> None:
    """Return freed C-heap memory to the OS (glibc `malloc_trim`; a no-op elsewhere)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Callable[[int], object] | Literal[False] | None = None  # None: not looked up yet
