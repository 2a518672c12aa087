"""Embedding checkpoints: each finished batch is written to disk before the next starts, so a
killed run resumes without re-embedding finished batches."""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from imgdedup_pipeline.core.atomic_write import write_atomically
from imgdedup_pipeline.core.disposable_cache import read_or_discard

if TYPE_CHECKING:
    from imgdedup_pipeline.core.object_store import ObjectFolder

logger = logging.getLogger(__name__)
T = TypeVar("T")


class EmbeddingCheckpoint:
    """Parquet shards of (pixel_hash, vector) for one model, in `directory`.

    Shards are written to a temporary name and renamed, so a kill never leaves a partial shard; a
    shard that cannot be read anyway (damaged on disk) is named through `warn`, removed, and its
    contents are embedded again.
    """

    def __init__(self, directory: str | os.PathLike, warn: Callable[[str], None] = logger.warning):
        self.directory = Path(directory)
        self.warn = warn

    @property
    def location(self) -> str:
        """Where the batches are: a folder here, an object-storage URI in `ObjectStoreCheckpoint`."""
        return str(self.directory)

    def write(self, hashes: list[str], vectors: np.ndarray) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        table = _batch_table(hashes, vectors)
        return write_atomically(self.directory / _batch_name(), lambda temporary: pq.write_table(table, temporary))

    def shards(self) -> list[Path]:
        return sorted(self.directory.glob("batch-*.parquet")) if self.directory.is_dir() else []

    def hashes(self) -> set[str]:
        """Pixel hashes of every complete shard, without reading their vectors; a shard removed
        after listing (cleared once its vectors are in the vector table) is skipped."""
        hashes: set[str] = set()
        for shard in self.shards():
            table = read_or_discard(shard, lambda path: pq.read_table(path, columns=["pixel_hash"]), self.warn)
            if table is not None:
                hashes.update(table.column("pixel_hash").to_pylist())
        return hashes

    def load(self) -> dict[str, np.ndarray]:
        """pixel hash -> vector from every complete shard."""
        vectors: dict[str, np.ndarray] = {}
        for shard in self.shards():
            shard_vectors = read_or_discard(shard, _read_shard, self.warn)
            if shard_vectors is not None:
                vectors.update(shard_vectors)
        return vectors

    def clear(self) -> None:
        """Remove the shards once their vectors are safely in the vector table."""
        for shard in self.shards():
            shard.unlink(missing_ok=True)


class ObjectStoreCheckpoint(EmbeddingCheckpoint):
    """The same batches as objects under `folder` on object storage, shared by every worker: a
    batch is one PUT (whole or absent, as S3 makes it), named by a random UUID so that concurrent
    shards never write the same object. An unreadable batch is named through `warn`, deleted and
    its contents are embedded again."""

    def __init__(self, folder: ObjectFolder, warn: Callable[[str], None] = logger.warning):
        self.folder = folder
        self.warn = warn

    @property
    def location(self) -> str:
        return self.folder.uri()

    def write(self, hashes: list[str], vectors: np.ndarray) -> str:  # type: ignore[override]  # a URI, not a Path
        sink = io.BytesIO()
        pq.write_table(_batch_table(hashes, vectors), sink)
        return self.folder.put(_batch_name(), sink.getvalue())

    def shards(self) -> list[str]:  # type: ignore[override]  # object names, not Paths
        return [name for name in self.folder.names("batch-") if name.endswith(".parquet")]

    def hashes(self) -> set[str]:
        hashes: set[str] = set()
        for table in self._read_each(lambda data: pq.read_table(data, columns=["pixel_hash"])):
            hashes.update(table.column("pixel_hash").to_pylist())
        return hashes

    def load(self) -> dict[str, np.ndarray]:
        vectors: dict[str, np.ndarray] = {}
        for shard_vectors in self._read_each(_read_shard):
            vectors.update(shard_vectors)
        return vectors

    def clear(self) -> None:
        self.folder.delete(self.shards())

    def _read_each(self, read: Callable[[io.BytesIO], T]) -> list[T]:
        """`read` of every complete batch; one removed since listing (cleared) is skipped, an
        unreadable one is named and deleted."""
        found = (self.folder.read_or_discard(name, read, self.warn) for name in self.shards())
        return [result for result in found if result is not None]


def _batch_name() -> str:
    return f"batch-{uuid.uuid4().hex}.parquet"


def _batch_table(hashes: list[str], vectors: np.ndarray) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.table(
        {
            "pixel_hash": pa.array(hashes, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
        }
    )


def _read_shard(path: Path | io.BytesIO) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    keys = table.column("pixel_hash").to_pylist()
    width = table.schema.field("vector").type.list_size
    matrix = table.column("vector").combine_chunks().flatten().to_numpy().reshape(len(keys), width)
    if not np.isfinite(matrix).all():
        raise ValueError("holds non-finite vector values")
    return dict(zip(keys, matrix))
