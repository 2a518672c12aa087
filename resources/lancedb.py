"""LanceDB, the store of record for embedding vectors (one table per model)."""

import hashlib
import re

import dagster as dg
import numpy as np
import pyarrow as pa

from imgdedup_pipeline.core.distances import to_uniqueness
from imgdedup_pipeline.core.search.batches import lancedb_batches, release_free_heap
from imgdedup_pipeline.core.search.contents import ContentVectors
from imgdedup_pipeline.core.search.result import l2_normalize

# The Dagster concurrency pool of every step that writes a vector table (limit 1 in dagster.yaml):
# LanceDB does not detect two concurrent merge_inserts of the same new key, so unserialised writers
# would both insert it and duplicate the row.
WRITER_POOL = "lancedb_writer"


def table_name_for(model_id: str, prefix: str = "vectors") -> str:
    """A table per model id, so two models' vectors never share a table."""
    slug = re.sub(r"[^a-zA-Z0-9]+", "_", model_id.split("/")[-1]).strip("_")[:40]
    return f"{prefix}_{slug}_{hashlib.sha1(model_id.encode()).hexdigest()[:10]}"


class LanceDBResource(dg.ConfigurableResource):
    """Embedded LanceDB (a local directory) or object storage (`s3://...` URI).

    Attributes:
        uri: database location.
        table_prefix: prefix of the per-model vector tables.
        storage_options: object-store options passed to LanceDB for `s3://` (and `gs://`, `az://`)
            URIs, e.g. `{"endpoint": "http://minio:9000", "allow_http": "true"}`. Unset, LanceDB
            reads the standard `AWS_*` environment variables (AWS_ACCESS_KEY_ID,
            AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP).
    """

    uri: str
    table_prefix: str = "vectors"
    storage_options: dict[str, str] | None = None

    def connect(self):
        import lancedb

        return lancedb.connect(self.uri, storage_options=self.storage_options or None)

    def table_name(self, model_id: str) -> str:
        return table_name_for(model_id, self.table_prefix)

    def open_vectors(self, model_id: str):
        """The model's vector table, or None when nothing was written for it yet."""
        db = self.connect()
        name = self.table_name(model_id)
        return db.open_table(name) if name in db.table_names() else None

    def stored_hashes(self, model_id: str) -> set[str]:
        """The pixel hashes stored for the model (the run's first read of its table).

        Raises:
            ValueError: the table cannot be read (a damaged file), naming it and the fix: unlike
                the caches under OUT/state, the vector table is not recomputed behind your back.
        """
        try:
            table = self.open_vectors(model_id)
            if table is None:
                return set()
            return set(table.to_arrow().column("pixel_hash").to_pylist()) if table.count_rows() else set()
        except (RuntimeError, OSError) as exc:  # what lance raises for unreadable data
            location = f"{self.uri.rstrip('/')}/{self.table_name(model_id)}.lance"
            raise ValueError(
                f"the vector table {location} cannot be read ({str(exc).splitlines()[0][:300]}); it is the store of record, "
                f"not a cache: restore it from a backup, or move {location} aside to embed every image again into a new table"
            ) from exc

    def insert_missing(self, model_id: str, hashes: list[str], vectors: np.ndarray):
        """Insert vectors whose pixel hash has none yet (merge_insert keyed by pixel_hash, so a
        rerun never duplicates a row). Returns (table, rows inserted)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        schema = pa.schema(
            [
                ("pixel_hash", pa.string()),
                ("model_id", pa.string()),
                ("vector", pa.list_(pa.float32(), vectors.shape[1])),
            ],
            metadata={"model_id": model_id},
        )
        db = self.connect()
        table = db.create_table(self.table_name(model_id), schema=schema, exist_ok=True)
        if not hashes:
            return table, 0
        data = pa.table(
            {
                "pixel_hash": pa.array(hashes, pa.string()),
                "model_id": pa.array([model_id] * len(hashes), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
            },
            schema=schema,
        )
        result = table.merge_insert("pixel_hash").when_not_matched_insert_all().execute(data)
        return table, int(result.num_inserted_rows)

    def read_vectors(self, model_id: str, hashes: set[str]) -> dict[str, np.ndarray]:
        """pixel hash -> vector for the requested hashes that are stored."""
        table = self.open_vectors(model_id)
        if table is None:
            return {}
        arrow = table.to_arrow().select(["pixel_hash", "model_id", "vector"])
        stored_models = set(arrow.column("model_id").unique().to_pylist())
        if stored_models - {model_id}:
            raise ValueError(
                f"table {table.name} mixes models {sorted(stored_models)}; refusing to compare their vectors"
            )
        keys = arrow.column("pixel_hash").to_pylist()
        matrix = arrow.column("vector").combine_chunks().flatten().to_numpy().reshape(len(keys), -1)
        return {h: matrix[i] for i, h in enumerate(keys) if h in hashes}

    def read_content_vectors(self, model_id: str, hashes: set[str], batch_rows: int = 2_048) -> ContentVectors:
        """The requested hashes' vectors that are stored, sorted by hash and L2-normalised.

        Streams the table in `batch_rows`-row reads into one preallocated float32 matrix (the only
        full copy; at 1M x 768 rows ~2.9 GiB, where `read_vectors` holds two), reading a pinned
        table version so that a concurrent writer cannot shift the rows. Few rows per read: LanceDB
        keeps read buffers resident in proportion to them (BENCHMARKS.md, "Memory at 1M").
        """
        table = self.open_vectors(model_id)
        if table is None or not hashes:
            return ContentVectors(np.empty(0, dtype=object), np.empty((0, 0), np.float32))
        table.checkout(table.version)
        total = table.count_rows()
        labels = table.search().select(["pixel_hash", "model_id"]).limit(max(1, total)).to_arrow()
        stored_models = set(labels.column("model_id").unique().to_pylist())
        if stored_models - {model_id}:
            raise ValueError(
                f"table {table.name} mixes models {sorted(stored_models)}; refusing to compare their vectors"
            )
        stored = set(labels.column("pixel_hash").to_pylist())
        del labels
        wanted = sorted(h for h in hashes if h in stored)  # the caller's strings, not a second copy of each key
        del stored
        dims = table.schema.field("vector").type.list_size
        if not wanted:
            return ContentVectors(np.empty(0, dtype=object), np.empty((0, dims), np.float32))
        # Row positions by binary search over fixed-width bytes (C comparisons): at 1M rows ~10x
        # faster and ~0.5 GiB lighter than pandas' index lookups on its Arrow-backed strings.
        sorted_keys = np.array([h.encode() for h in wanted])
        matrix = np.zeros((len(wanted), dims), dtype=np.float32)
        filled = np.zeros(len(wanted), dtype=bool)
        for batch_keys, batch_vectors in lancedb_batches(table, batch_rows=batch_rows):
            keys = np.array([h.encode() for h in batch_keys], dtype=bytes)  # never truncated: widths may differ
            positions = np.minimum(np.searchsorted(sorted_keys, keys), len(wanted) - 1)
            found = sorted_keys[positions] == keys
            matrix[positions[found]] = l2_normalize(batch_vectors[found])
            filled[positions[found]] = True
        if not filled.all():  # a zero row would pass for a vector at distance 1 from everything
            raise ValueError(
                f"{int((~filled).sum())} vectors listed in {table.name} were not read back (e.g. {wanted[int(np.argmin(filled))][:12]}); rerun"
            )
        # LanceDB's freed read buffers stay in the C heap's arenas unless handed back.
        release_free_heap()
        return ContentVectors(np.array(wanted, dtype=object), matrix)

    def nearest_paths(
        self, model_id: str, pixel_hash: str, paths_by_hash: dict[str, list[str]], k: int, exclude_path: str
    ) -> list[dict]:
        """The k images nearest to the content `pixel_hash`, by LanceDB cosine search.

        Returns:
            [{"path", "uniqueness_distance"}] ascending; `uniqueness_distance` is half the cosine
            distance (the uniqueness scale). Vectors of contents no longer present are skipped.
        """
        table = self.open_vectors(model_id)
        if table is None:
            raise ValueError(f"no vector table for model {model_id} at {self.uri}")
        row = table.search().where(f"pixel_hash = '{pixel_hash}'").select(["vector"]).limit(1).to_list()
        if not row:
            raise ValueError(f"content {pixel_hash[:12]} has no vector in {table.name}")
        wanted = k + sum(len(p) for p in paths_by_hash.values()) if len(paths_by_hash) < 1000 else 4 * k + 10
        hits = (
            table.search(np.asarray(row[0]["vector"], np.float32))
            .metric("cosine")
            .select(["pixel_hash", "_distance"])
            .limit(wanted)
            .to_list()
        )
        results = []
        for hit in hits:
            for path in paths_by_hash.get(hit["pixel_hash"], []):
                if path != exclude_path:
                    results.append(
                        {"path": path, "uniqueness_distance": to_uniqueness(max(0.0, float(hit["_distance"])))}
                    )
        return results[:k]
