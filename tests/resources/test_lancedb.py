"""Tests for LanceDBResource.read_content_vectors against a real embedded LanceDB in tmp."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from imgdedup_pipeline.resources.lancedb import LanceDBResource

MODEL = "test/model"


@pytest.fixture
def store(tmp_path):
    return LanceDBResource(uri=str(tmp_path / "lancedb"))


def stored_vectors(store, rows: int = 50, dims: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    hashes = [f"{rng.integers(0, 2**40):016x}" for _ in range(rows)]  # inserted in no particular order
    vectors = rng.standard_normal((rows, dims)).astype(np.float32) * 3
    store.insert_missing(MODEL, hashes, vectors)
    return hashes, vectors


def test_reads_the_wanted_stored_vectors_sorted_by_hash_and_normalised(store):
    hashes, vectors = stored_vectors(store)
    wanted = set(hashes[5:35]) | {"not-stored-1", "not-stored-2"}
    read = store.read_content_vectors(MODEL, wanted, batch_rows=7)  # several batches
    assert read.hashes.tolist() == sorted(hashes[5:35])
    by_hash = dict(zip(hashes, vectors))
    expected = np.stack([by_hash[h] / np.linalg.norm(by_hash[h]) for h in read.hashes])
    np.testing.assert_allclose(read.matrix, expected, atol=1e-6)
    assert read.matrix.dtype == np.float32


def test_agrees_with_read_vectors(store):
    hashes, _ = stored_vectors(store, rows=30)
    read = store.read_content_vectors(MODEL, set(hashes))
    as_dict = store.read_vectors(MODEL, set(hashes))
    for row, pixel_hash in enumerate(read.hashes):
        vector = as_dict[pixel_hash]
        np.testing.assert_allclose(read.matrix[row], vector / np.linalg.norm(vector), atol=1e-6)


def test_no_table_or_nothing_wanted_gives_no_rows(store):
    assert len(store.read_content_vectors(MODEL, {"a"}).hashes) == 0
    hashes, _ = stored_vectors(store)
    assert len(store.read_content_vectors(MODEL, set()).hashes) == 0
    assert len(store.read_content_vectors("other/model", set(hashes)).hashes) == 0


def test_a_table_mixing_models_is_refused(store):
    hashes, vectors = stored_vectors(store, rows=5)
    table = store.open_vectors(MODEL)
    table.add(
        pa.table(
            {
                "pixel_hash": ["intruder"],
                "model_id": ["another/model"],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[0]), vectors.shape[1]),
            },
            schema=table.schema,
        )
    )
    with pytest.raises(ValueError, match="mixes models"):
        store.read_content_vectors(MODEL, set(hashes))


def test_keys_of_other_lengths_are_not_confused(store):
    # A wanted key that is a prefix of a stored one must match only itself.
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    store.insert_missing(MODEL, ["abcd", "abc", "ab"], vectors)
    read = store.read_content_vectors(MODEL, {"abc", "zzz"}, batch_rows=1)
    assert read.hashes.tolist() == ["abc"]
    np.testing.assert_allclose(read.matrix, [[0.0, 1.0]])


def test_a_row_not_read_back_is_an_error_not_a_zero_vector(store, monkeypatch):
    import imgdedup_pipeline.resources.lancedb as module

    hashes, _ = stored_vectors(store, rows=20)
    original = module.lancedb_batches  # a paging bug that skips the second batch
    monkeypatch.setattr(
        module,
        "lancedb_batches",
        lambda table, batch_rows: (
            batch for number, batch in enumerate(original(table, batch_rows=batch_rows)) if number != 1
        ),
    )
    with pytest.raises(ValueError, match="not read back"):
        store.read_content_vectors(MODEL, set(hashes), batch_rows=5)
