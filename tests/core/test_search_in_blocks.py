"""The scoring stage's searches worked in row blocks (to bound their memory at 1M contents) give
the answer of one block, and the pHash matrix filled row by row equals the stacked one."""

from __future__ import annotations

import numpy as np
import pytest

import core.search.result as result_module
import core.search.signals as signals_module
from core.search.result import NeighborSearch, merge_searches
from core.search.signals import HashSignal


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


def picture_hashes(rows: int, seed: int = 0) -> np.ndarray:
    """(rows, 8) uint64 hashes: half flat (not informative), the rest near copies of a few pictures."""
    rng = np.random.default_rng(seed)
    pictures = rng.integers(0, 2**63, size=(4, 8), dtype=np.int64).view(np.uint64)
    hashes = pictures[rng.integers(0, 4, rows)] ^ (np.uint64(1) << rng.integers(0, 64, (rows, 1)).astype(np.uint64))
    hashes[rng.random(rows) < 0.5] = 0
    return hashes


@pytest.mark.parametrize("block_rows", [1, 3], ids=["one-row-blocks", "uneven-blocks"])
def test_vouched_matches_mapped_in_row_blocks_equal_one_block(monkeypatch, block_rows):
    phashes = picture_hashes(40)
    signal = HashSignal({}, threshold_bits=10)
    whole, _ = signal.vouched_matches(phashes, radius=0.1, k=4)
    assert (whole.topk_index >= 0).any() and (whole.topk_index[(phashes == 0).all(axis=1)] == -1).all()
    monkeypatch.setattr(signals_module, "MAP_BLOCK_ROWS", block_rows)
    assert_same_search(signal.vouched_matches(phashes, radius=0.1, k=4)[0], whole)


@pytest.mark.parametrize(
    "as_stored",
    [lambda row: row.view(np.int64), lambda row: row, lambda row: [int(v) for v in row.view(np.int64)]],
    ids=["int64", "uint64", "python-ints"],
)
def test_hash_matrix_equals_the_stacked_rows(as_stored):
    phashes = picture_hashes(12)
    keys = [f"{i:04x}" for i in range(12)]
    signal = HashSignal({key: as_stored(phashes[i]) for i, key in enumerate(keys)})
    order = keys[::-1]
    matrix = signal.matrix(order)
    assert matrix.dtype == np.uint64
    np.testing.assert_array_equal(matrix, phashes[::-1])


def test_hash_matrix_refuses_rows_of_another_shape():
    signal = HashSignal({"a": np.zeros(8, np.int64), "b": np.zeros(1, np.int64)})
    with pytest.raises(ValueError, match="shape"):
        signal.matrix(["a", "b"])
