"""What every neighbour search returns (`NeighborSearch`), and the operations on results that do
not depend on the engine that produced them: merging signals on one scale, rescaling, top-k from
pairs, and the nearest row outside a group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from imgdedup_pipeline.core.distances import nearest_first

# Rows whose top-k lists `merge_searches` merges, or `nearest_outside_group` reads, at once.
MERGE_BLOCK_ROWS = 65_536


@dataclass(frozen=True)
class NeighborSearch:
    """Result of a neighbour search over M rows (cosine distance, bits, or a fused scale).

    Attributes:
        topk_index: (M, k) int64, nearest other rows, ascending by distance; -1 pads.
        topk_distance: (M, k) float32 distances, +inf where padded.
        pair_left, pair_right: (P,) int64 row pairs with left < right whose distance <= radius.
        pair_distance: (P,) float32 their distances.
    """

    topk_index: np.ndarray
    topk_distance: np.ndarray
    pair_left: np.ndarray
    pair_right: np.ndarray
    pair_distance: np.ndarray

    @property
    def width(self) -> int:
        return self.topk_index.shape[1]

    def lists(self, block: slice) -> tuple[np.ndarray, np.ndarray]:
        """The top-k lists of a block of rows."""
        return self.topk_index[block], self.topk_distance[block]


class RowBlockLists(Protocol):
    """A search whose top-k lists `merge_searches` reads one row block at a time: a
    `NeighborSearch`, or one kept as its pairs (`core.search.signals.VouchedPairs.lists`)."""

    @property
    def pair_left(self) -> np.ndarray: ...

    @property
    def pair_right(self) -> np.ndarray: ...

    @property
    def pair_distance(self) -> np.ndarray: ...

    @property
    def width(self) -> int: ...

    def lists(self, block: slice) -> tuple[np.ndarray, np.ndarray]:
        """(rows in block, width) int64 indices and float32 distances."""
        ...


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def merge_searches(
    searches: Sequence[NeighborSearch | RowBlockLists], k: int, into_first: bool = False
) -> NeighborSearch:
    """Fuse searches whose distances are already on one scale: a pair's distance is the smallest
    any search gives it; top-k lists are merged and cut to k, one row block at a time.

    The first search is a `NeighborSearch` (it gives the row count); the others may keep their
    lists as pairs (`RowBlockLists`). `into_first`: write the merged lists into the first search's
    own arrays where they have the result's shape and types (the caller's, not used after): one
    (M, k) pair of arrays less (~190 MiB at 1M rows, k 16)."""
    first = searches[0]
    assert isinstance(first, NeighborSearch)
    rows = len(first.topk_index)
    width = sum(s.width for s in searches)
    k = max(0, min(k, width))
    empty = [s.lists(slice(0, 0)) for s in searches]  # each search's list types
    index_type = np.result_type(*[index for index, _ in empty])
    distance_type = np.result_type(*[distance for _, distance in empty])
    if (
        into_first
        and first.topk_index.shape == (rows, k)
        and (first.topk_index.dtype, first.topk_distance.dtype) == (index_type, distance_type)
        and first.topk_index.flags.writeable
        and first.topk_distance.flags.writeable
    ):
        # Each block of the result depends only on the same rows of the inputs, so it may
        # overwrite the first input's block once it is computed.
        topk_index, topk_distance = first.topk_index, first.topk_distance
    else:
        topk_index = np.empty((rows, k), dtype=index_type)
        topk_distance = np.empty((rows, k), dtype=distance_type)
    # Row blocks: the candidates side by side and their sort order exist for one block at a time
    # (at 1M rows and two signals, all at once would add ~0.6 GiB).
    for start in range(0, rows, MERGE_BLOCK_ROWS):
        block = slice(start, start + MERGE_BLOCK_ROWS)
        index, distance = zip(*(s.lists(block) for s in searches), strict=True)
        topk_index[block], topk_distance[block] = nearest_first(
            np.concatenate(index, axis=1), np.concatenate(distance, axis=1), k
        )
    pairs = (
        pd.DataFrame(
            {
                "left": np.concatenate([s.pair_left for s in searches]),
                "right": np.concatenate([s.pair_right for s in searches]),
                "distance": np.concatenate([s.pair_distance for s in searches]),
            }
        )
        .groupby(["left", "right"], as_index=False, sort=True)["distance"]
        .min()
    )
    return NeighborSearch(
        topk_index=topk_index,
        topk_distance=topk_distance,
        pair_left=pairs["left"].to_numpy(np.int64),
        pair_right=pairs["right"].to_numpy(np.int64),
        pair_distance=pairs["distance"].to_numpy(np.float32),
    )


def scaled(search: NeighborSearch, factor: float) -> NeighborSearch:
    """The same search with every distance multiplied by `factor` (maps a signal onto a scale)."""
    return NeighborSearch(
        search.topk_index,
        search.topk_distance * np.float32(factor),
        search.pair_left,
        search.pair_right,
        search.pair_distance * np.float32(factor),
    )


def nearest_outside_group(
    row_distances, group_of_row: np.ndarray, search: NeighborSearch
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the nearest row in a different group, and its distance.

    Uses the top-k lists; rows whose k neighbours all share their group (groups larger than k) are
    recomputed exactly with `row_distances(row) -> (M,) distances`.

    Returns:
        (index, distance): (M,) int64 with -1 where no row outside the group exists, and (M,)
        float32 with +inf there.
    """
    rows = len(group_of_row)
    index = np.full(rows, -1, dtype=np.int64)
    distance = np.full(rows, np.inf, dtype=np.float32)
    if rows == 0:
        return index, distance
    topk = search.topk_index
    if topk.shape[1] == 0:  # a single row: nothing outside its group
        return index, distance
    has_other = np.zeros(rows, dtype=bool)
    # Row blocks: the (M, k) temporaries of one pass would add ~0.25 GiB at 1M rows.
    for start in range(0, rows, MERGE_BLOCK_ROWS):
        block = slice(start, start + MERGE_BLOCK_ROWS)
        block_topk = topk[block]
        valid = block_topk >= 0
        other_group = valid & (group_of_row[np.where(valid, block_topk, 0)] != group_of_row[block, None])
        has_other[block] = other_group.any(axis=1)
        first = np.argmax(other_group, axis=1)
        found = np.nonzero(has_other[block])[0]
        index[start + found] = block_topk[found, first[found]]
        distance[start + found] = search.topk_distance[block][found, first[found]]
    group_sizes = np.bincount(group_of_row)
    needs_exact = np.nonzero(~has_other & (group_sizes[group_of_row] < rows))[0]
    for row in needs_exact:
        row_distance = np.array(row_distances(row), dtype=np.float32)
        row_distance[group_of_row == group_of_row[row]] = np.inf
        best = int(np.argmin(row_distance))
        index[row], distance[row] = best, row_distance[best]
    return index, distance
