"""The scoring stage's searches rearranged to bound their memory at 1M contents give the answer of
the plain construction: top-k lists merged in row blocks, the pHash matches' lists built over all
contents, the pHash matrix filled row by row."""

from __future__ import annotations

import numpy as np
import pytest

import imgdedup_pipeline.core.search.result as result_module
from imgdedup_pipeline.core.images import informative_phashes
from imgdedup_pipeline.core.search.result import NeighborSearch, merge_searches, nearest_outside_group, scaled
from imgdedup_pipeline.core.search.signals import HashSignal, hash_pairs_within


def random_search(rows: int, k: int, seed: int) -> NeighborSearch:
    rng = np.random.default_rng(seed)
    index = rng.integers(-1, rows, size=(rows, k))
    distance = np.where(index >= 0, rng.integers(0, 5, size=(rows, k)) / 10, np.inf).astype(np.float32)  # ties
    left = rng.integers(0, rows - 1, size=20)
    right = left + 1
    return NeighborSearch(index, distance, left, right, rng.random(20).astype(np.float32))


def assert_same_search(found: NeighborSearch, expected: NeighborSearch):
    for name in ("topk_index", "topk_distance", "pair_left", "pair_right", "pair_distance"):
        got, want = getattr(found, name), getattr(expected, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("block_rows", [1, 7, 50], ids=["one-row-blocks", "uneven-blocks", "one-block"])
def test_merge_searches_in_row_blocks_equals_one_block(monkeypatch, block_rows):
    searches = [random_search(50, 4, seed=1), random_search(50, 6, seed=2)]
    monkeypatch.setattr(result_module, "MERGE_BLOCK_ROWS", 10_000)
    whole = merge_searches(searches, k=5)
    monkeypatch.setattr(result_module, "MERGE_BLOCK_ROWS", block_rows)
    assert_same_search(merge_searches(searches, k=5), whole)


@pytest.mark.parametrize("block_rows", [1, 7, 50], ids=["one-row-blocks", "uneven-blocks", "one-block"])
def test_merge_searches_into_the_first_searchs_lists_equals_a_new_merge(monkeypatch, block_rows):
    monkeypatch.setattr(result_module, "MERGE_BLOCK_ROWS", block_rows)
    expected = merge_searches([random_search(50, 5, seed=1), random_search(50, 6, seed=2)], k=5)
    first = random_search(50, 5, seed=1)
    merged = merge_searches([first, random_search(50, 6, seed=2)], k=5, into_first=True)
    assert_same_search(merged, expected)
    assert merged.topk_index is first.topk_index and merged.topk_distance is first.topk_distance
    narrower = random_search(50, 3, seed=1)  # not the result's shape: a new pair of arrays
    merged = merge_searches([narrower, random_search(50, 6, seed=2)], k=5, into_first=True)
    assert merged.topk_index is not narrower.topk_index and merged.topk_index.shape == (50, 5)


@pytest.mark.parametrize("block_rows", [1, 7, 50], ids=["one-row-blocks", "uneven-blocks", "one-block"])
def test_hash_pairs_merged_block_by_block_equal_their_whole_lists_merged(monkeypatch, block_rows):
    """The pHash matches reach the merge as pairs whose lists are built per row block; the merged
    search equals merging their whole (M, k) lists."""
    phashes = picture_hashes(50, seed=4)
    phashes[::3] = np.roll(phashes[::3], 1, axis=1)  # these match the others through a turned variant
    signal = HashSignal.from_mapping({}, threshold_bits=10)
    # Random edge hashes: turned matches are mostly not confirmed, identity ones are kept.
    edges = np.random.default_rng(6).integers(0, 2**63, size=(50, 4), dtype=np.int64).view(np.uint64)
    pairs, _ = signal.vouched_pairs(phashes, edges)
    unconfirmed, _ = signal.vouched_pairs(phashes, np.zeros((50, 4), np.uint64))
    assert 20 < len(pairs.left) < len(unconfirmed.left)  # rows with several matches; some turns refused
    embedding = random_search(50, 6, seed=5)
    monkeypatch.setattr(result_module, "MERGE_BLOCK_ROWS", 10_000)
    whole = merge_searches([embedding, pairs.matches(8, 0.01)], k=8)
    monkeypatch.setattr(result_module, "MERGE_BLOCK_ROWS", block_rows)
    assert_same_search(merge_searches([embedding, pairs.lists(8, 0.01)], k=8), whole)


def picture_hashes(rows: int, seed: int = 0) -> np.ndarray:
    """(rows, 8) uint64 hashes: half flat (not informative), the rest near copies of a few pictures."""
    rng = np.random.default_rng(seed)
    pictures = rng.integers(0, 2**63, size=(4, 8), dtype=np.int64).view(np.uint64)
    hashes = pictures[rng.integers(0, 4, rows)] ^ (np.uint64(1) << rng.integers(0, 64, (rows, 1)).astype(np.uint64))
    hashes[rng.random(rows) < 0.5] = 0
    return hashes


@pytest.mark.parametrize("rows", [40, 2, 1], ids=["many", "two", "one"])
def test_vouched_matches_equal_the_informative_rows_search_mapped_back(rows):
    """Top-k lists built over all contents from the mapped pairs equal the informative rows' own
    lists mapped back to content rows (how they were built before)."""
    phashes = picture_hashes(rows)
    phashes[0] = phashes[-1] ^ np.uint64(1)  # informative, with a match
    signal = HashSignal.from_mapping({}, threshold_bits=10)
    informative = np.flatnonzero(informative_phashes(phashes))
    own, _ = hash_pairs_within(phashes[informative], 4, 10)
    index = np.full((rows, own.topk_index.shape[1]), -1, dtype=np.int64)
    distance = np.full(index.shape, np.inf, dtype=np.float32)
    index[informative] = np.where(own.topk_index >= 0, informative[np.maximum(own.topk_index, 0)], -1)
    distance[informative] = own.topk_distance
    mapped = NeighborSearch(index, distance, informative[own.pair_left], informative[own.pair_right], own.pair_distance)
    found, _ = signal.vouched_matches(phashes, np.zeros((rows, 4), np.uint64), radius=0.1, k=4)
    assert_same_search(found, scaled(mapped, signal.bits_to_cosine(0.1)))
    if rows == 40:
        assert (found.topk_index >= 0).any() and (found.topk_index[(phashes == 0).all(axis=1)] == -1).all()


@pytest.mark.parametrize(
    "as_stored",
    [lambda row: row.view(np.int64), lambda row: row, lambda row: [int(v) for v in row.view(np.int64)]],
    ids=["int64", "uint64", "python-ints"],
)
def test_hash_matrix_equals_the_stacked_rows(as_stored):
    phashes = picture_hashes(12)
    keys = [f"{i:04x}" for i in range(12)]
    signal = HashSignal.from_mapping({key: as_stored(phashes[i]) for i, key in enumerate(keys)})
    order = keys[::-1]
    matrix = signal.matrix(order)
    assert matrix.dtype == np.uint64
    np.testing.assert_array_equal(matrix, phashes[::-1])


def test_hash_matrix_refuses_rows_of_another_shape():
    with pytest.raises(ValueError, match="shape"):
        HashSignal.from_mapping({"a": np.zeros(8, np.int64), "b": np.zeros(1, np.int64)})


def test_hash_matrix_is_the_signals_own_for_its_contents_and_refuses_an_unknown_one():
    phashes = picture_hashes(5)
    keys = [f"{i:04x}" for i in range(5)]
    signal = HashSignal.from_mapping(dict(zip(keys, phashes, strict=True)))
    assert np.shares_memory(signal.matrix(keys), signal.hashes)  # the search's case: no copy
    np.testing.assert_array_equal(signal.matrix(keys[1:3]), phashes[1:3])
    with pytest.raises(KeyError, match="zz"):
        signal.matrix(["0001", "zz"])
    with pytest.raises(ValueError, match="sorted"):
        HashSignal(np.array(keys[::-1], dtype=object), phashes, np.zeros((5, 4), np.uint64))


@pytest.mark.parametrize("block_rows", [1, 7], ids=["one-row-blocks", "uneven-blocks"])
def test_nearest_outside_group_in_row_blocks_equals_one_block(monkeypatch, block_rows):
    search = random_search(50, 6, seed=3)
    group = np.arange(50) // 4  # groups of four rows: some rows' lists hold only their group

    def row_distances(row: int) -> np.ndarray:
        return np.abs(np.arange(50) - row).astype(np.float32)

    monkeypatch.setattr(result_module, "MERGE_BLOCK_ROWS", 10_000)
    whole = nearest_outside_group(row_distances, group, search)
    monkeypatch.setattr(result_module, "MERGE_BLOCK_ROWS", block_rows)
    for got, want in zip(nearest_outside_group(row_distances, group, search), whole):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_pair_distances_in_blocks_equal_one_gather_of_every_pair():
    """Close pairs' distances are computed a block of pairs at a time (PAIR_BLOCK); across block
    boundaries every distance is bit-identical to one dot product per pair over all pairs at once."""
    from imgdedup_pipeline.core.distances import cosine_distance
    from imgdedup_pipeline.core.search.exact_cosine import PAIR_BLOCK, cosine_pair_distances

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 96)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    left, right = rng.integers(0, 300, 2 * PAIR_BLOCK + 5), rng.integers(0, 300, 2 * PAIR_BLOCK + 5)
    found = cosine_pair_distances(vectors, left, right)
    expected = cosine_distance(np.einsum("ij,ij->i", vectors[left], vectors[right]))
    assert found.dtype == np.float32
    np.testing.assert_array_equal(found, expected)
    assert len(cosine_pair_distances(vectors, left[:0], right[:0])) == 0
