"""Tests for core.search.ivf.search_neighbors_ivf: the indexed search against the exact one.

Synthetic unit vectors in tight clusters (as bench/scoring.py makes them, at a test's size), with
planted exact copies and near duplicates whose rows are known, so that every planted pair must be
found with its exact distance.
"""

from __future__ import annotations

import numpy as np
import pytest

from imgdedup_pipeline.core.search.batches import lancedb_batches, read_batches
from imgdedup_pipeline.core.search.choose import MIN_INDEX_ROWS, choose_engine
from imgdedup_pipeline.core.search.engines import ExactCosine, search_neighbors
from imgdedup_pipeline.core.search.ivf import IndexedSearch, IvfParameters, faiss_module, search_neighbors_ivf

ROWS = 8_000
DIM = 128
K = 16
RADIUS = 0.1  # the default near-duplicate radius (2 x 0.05 on the uniqueness scale)
FLOAT32_TOLERANCE = 1e-6


def clustered(rows: int, dim: int, seed: int = 0):
    """(rows, dim) unit float32 rows: clusters of ~20, 2 % exact copies, 3 % near duplicates.

    Returns the vectors and the planted (source, copy) pairs, exact and near."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((rows // 20, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), rows)] + 0.6 * rng.standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    planted = rng.choice(rows, size=(int(rows * 0.05), 2), replace=False)  # distinct rows: no chains
    exact, near = planted[: int(rows * 0.02)], planted[int(rows * 0.02) :]
    vectors[exact[:, 1]] = vectors[exact[:, 0]]
    vectors[near[:, 1]] = vectors[near[:, 0]] + 0.01 * rng.standard_normal((len(near), dim)).astype(np.float32)
    vectors[near[:, 1]] /= np.linalg.norm(vectors[near[:, 1]], axis=1, keepdims=True)
    return vectors, exact, near


@pytest.fixture(scope="module")
def data():
    faiss_module()  # faiss-cpu comes with .[dev] (and the `scale` extra); fail, naming it, if missing
    vectors, exact, near = clustered(ROWS, DIM)
    return (
        vectors,
        exact,
        near,
        search_neighbors(vectors, k=K, radius=RADIUS),
        search_neighbors_ivf(vectors, k=K, radius=RADIUS),
    )


def test_result_has_the_exact_search_shape(data):
    vectors, _, _, exact, found = data
    assert isinstance(found, IndexedSearch)
    assert found.topk_index.shape == exact.topk_index.shape == (ROWS, K)
    assert found.topk_index.dtype == np.int64 and found.topk_distance.dtype == np.float32
    assert found.pair_left.dtype == found.pair_right.dtype == np.int64 and found.pair_distance.dtype == np.float32
    assert not (found.topk_index == np.arange(ROWS)[:, None]).any(), "a row is never its own neighbour"
    assert (np.diff(found.topk_distance, axis=1) >= 0).all(), "neighbours ascend by distance"
    assert (found.pair_left < found.pair_right).all()
    order = np.lexsort((found.pair_right, found.pair_left))
    assert (order == np.arange(len(order))).all(), "pairs sorted by (left, right)"


def test_recall_at_1_against_exact_search(data):
    _, _, _, exact, found = data
    strict = found.topk_index[:, 0] == exact.topk_index[:, 0]
    # Ties (a near duplicate of an exactly copied row has two neighbours at one distance) count.
    tie_aware = found.topk_distance[:, 0] <= exact.topk_distance[:, 0] + FLOAT32_TOLERANCE
    assert tie_aware.mean() >= 0.99
    assert strict.mean() >= 0.99
    # Where the neighbour is the same row, the distance is the exact float32 one.
    np.testing.assert_allclose(
        found.topk_distance[strict, 0], exact.topk_distance[strict, 0], atol=FLOAT32_TOLERANCE, rtol=0
    )


def test_every_distance_returned_is_exact(data):
    vectors, _, _, _, found = data
    valid = found.topk_index >= 0
    rows = np.nonzero(valid)[0]
    recomputed = np.clip(1.0 - np.einsum("ij,ij->i", vectors[rows], vectors[found.topk_index[valid]]), 0, 2)
    np.testing.assert_allclose(found.topk_distance[valid], recomputed, atol=FLOAT32_TOLERANCE, rtol=0)
    recomputed = np.clip(1.0 - np.einsum("ij,ij->i", vectors[found.pair_left], vectors[found.pair_right]), 0, 2)
    np.testing.assert_allclose(found.pair_distance, recomputed, atol=FLOAT32_TOLERANCE, rtol=0)


def test_planted_duplicates_are_all_found_with_exact_distances(data):
    vectors, exact_pairs, near_pairs, exact, found = data
    pairs = dict(zip(zip(found.pair_left.tolist(), found.pair_right.tolist()), found.pair_distance.tolist()))
    for source, copy in np.concatenate([exact_pairs, near_pairs]).tolist():
        key = (min(source, copy), max(source, copy))
        assert key in pairs, f"planted pair {key} missing"
        expected = max(0.0, 1.0 - float(vectors[source] @ vectors[copy]))
        assert abs(pairs[key] - expected) <= FLOAT32_TOLERANCE
    for source, copy in exact_pairs.tolist():
        assert pairs[(min(source, copy), max(source, copy))] <= 1e-6
        assert found.topk_index[copy, 0] == source and found.topk_index[source, 0] == copy
    # And the pairs are those of the exact search (the synthetic clusters are far outside the radius).
    assert set(zip(found.pair_left.tolist(), found.pair_right.tolist())) == set(
        zip(exact.pair_left.tolist(), exact.pair_right.tolist())
    )


def test_record_batches_stream_with_their_keys(data):
    vectors, _, _, _, found = data
    keys = np.array([f"h{i:05d}" for i in range(ROWS)], dtype=object)
    scale = np.linspace(0.5, 2.0, ROWS, dtype=np.float32)[:, None]  # batches are normalised as read

    def batches():
        for start in range(0, ROWS, 1_500):
            yield keys[start : start + 1_500], vectors[start : start + 1_500] * scale[start : start + 1_500]

    streamed = search_neighbors_ivf(batches(), k=K, radius=RADIUS, rows=ROWS)
    assert list(streamed.keys) == list(keys)
    assert (streamed.topk_index[:, 0] == found.topk_index[:, 0]).mean() >= 0.99
    assert set(zip(streamed.pair_left.tolist(), streamed.pair_right.tolist())) == set(
        zip(found.pair_left.tolist(), found.pair_right.tolist())
    )


def test_read_batches_checks_the_announced_rows():
    batch = (np.array(["a", "b"], dtype=object), np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="more than the 3 rows"):
        read_batches([batch, batch], rows=3)
    keys, vectors = read_batches([batch, batch])
    assert list(keys) == ["a", "b", "a", "b"] and vectors.shape == (4, 4)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)


def test_dense_rows_get_every_close_pair():
    # 60 near-identical rows: more close rows than the re-rank depth (16), so the exact scan of
    # those rows must supply the pairs the candidates cannot hold.
    vectors, _, _ = clustered(3_000, 32, seed=1)
    rng = np.random.default_rng(2)
    vectors[:60] = vectors[0] + 0.001 * rng.standard_normal((60, 32)).astype(np.float32)
    vectors[:60] /= np.linalg.norm(vectors[:60], axis=1, keepdims=True)
    exact = search_neighbors(vectors, k=4, radius=RADIUS)
    found = search_neighbors_ivf(vectors, k=4, radius=RADIUS, parameters=IvfParameters(rerank=16))
    assert set(zip(found.pair_left.tolist(), found.pair_right.tolist())) == set(
        zip(exact.pair_left.tolist(), exact.pair_right.tolist())
    )
    np.testing.assert_allclose(found.pair_distance, exact.pair_distance, atol=FLOAT32_TOLERANCE, rtol=0)


def test_small_inputs_use_the_exact_search():
    vectors, _, _ = clustered(500, 16)
    choice = choose_engine("cosine", len(vectors), "index", index_available=True)
    assert MIN_INDEX_ROWS > 500 and isinstance(choice.engine, ExactCosine)
    found = choice.engine.build(vectors).search(3, RADIUS)
    exact = search_neighbors(vectors, k=3, radius=RADIUS)
    np.testing.assert_array_equal(found.topk_index, exact.topk_index)
    with pytest.raises(ValueError, match="at least 2 rows"):
        search_neighbors_ivf(vectors[:1], k=3, radius=RADIUS)


def test_lancedb_batches_stream_a_table(tmp_path):
    import lancedb
    import pyarrow as pa

    vectors, _, _ = clustered(2_500, 16)
    keys = [f"{i:064x}" for i in range(len(vectors))]
    table = lancedb.connect(str(tmp_path)).create_table(
        "vectors",
        pa.table({"pixel_hash": keys, "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 16)}),
    )
    read_keys, read_vectors = read_batches(lancedb_batches(table, batch_rows=1_000), rows=table.count_rows())
    assert list(read_keys) == keys
    np.testing.assert_allclose(read_vectors, vectors, atol=1e-6)
