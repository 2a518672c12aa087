"""Embedding checkpoints: each finished batch is written to disk before the next starts, so a
killed run resumes without re-embedding finished batches."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


class EmbeddingCheckpoint:
    """Parquet shards of (pixel_hash, vector) for one model, in `directory`.

    Shards are written to a temporary name and renamed, so a kill never leaves a partial shard.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def write(self, hashes: list[str], vectors: np.ndarray) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        table = pa.table(
            {"pixel_hash": pa.array(hashes, pa.string()), "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])}
        )
        name = f"batch-{uuid.uuid4().hex}.parquet"
        temp = self.directory / f".{name}.tmp"
        pq.write_table(table, temp)
        os.replace(temp, self.directory / name)
        return self.directory / name

    def shards(self) -> list[Path]:
        return sorted(self.directory.glob("batch-*.parquet")) if self.directory.is_dir() else []

    def hashes(self) -> set[str]:
        """Pixel hashes of every complete shard, without reading their vectors; a shard removed
        after listing (cleared once its vectors are in the vector table) is skipped."""
        hashes: set[str] = set()
        for shard in self.shards():
            try:
                hashes.update(pq.read_table(shard, columns=["pixel_hash"]).column("pixel_hash").to_pylist())
            except FileNotFoundError:
                continue
        return hashes

    def load(self) -> dict[str, np.ndarray]:
        """pixel hash -> vector from every complete shard."""
        vectors: dict[str, np.ndarray] = {}
        for shard in self.shards():
            table = pq.read_table(shard)
            keys = table.column("pixel_hash").to_pylist()
            width = table.schema.field("vector").type.list_size
            matrix = table.column("vector").combine_chunks().flatten().to_numpy().reshape(len(keys), width)
            vectors.update(zip(keys, matrix))
        return vectors

    def clear(self) -> None:
        """Remove the shards once their vectors are safely in the vector table."""
        for shard in self.shards():
            shard.unlink(missing_ok=True)
